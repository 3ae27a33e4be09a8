//! Unit tests of the page store over synthetic page images.

use super::*;
use proptest::prelude::*;

const PS: u32 = 512;

fn image(pages: &[u8]) -> Vec<u8> {
    // Page n holds the byte pages[n] over its first half and n % 3 over its second: pages
    // with the same seed byte at different places may still differ.
    let mut bytes = Vec::new();
    for (n, &p) in pages.iter().enumerate() {
        bytes.extend(std::iter::repeat_n(p, PS as usize / 2));
        bytes.extend(std::iter::repeat_n((n % 3) as u8, PS as usize / 2));
    }
    bytes
}

fn put(store: &PageStore, dir: &Path, bytes: &[u8], level: i32) -> Put {
    let path = dir.join("src.img");
    std::fs::write(&path, bytes).unwrap();
    let f = File::open(&path).unwrap();
    store.put(&f, bytes.len() as u64, PS, level, &mut |_, _, _| {}).unwrap()
}

fn restore(store: &PageStore, dir: &Path, p: &Put) -> Result<Vec<u8>, StoreError> {
    let out = dir.join(format!("out-{}", p.sha256));
    let _ = std::fs::remove_file(&out);
    let r = store.materialize(&p.map, &p.sha256, &out, true, &mut |_, _| {});
    let bytes = std::fs::read(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    r.map(|_| bytes)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// A chain of versions: each restores byte for byte, only pages the store has never
    /// seen are written, and a repack plus a collection keeps every point restorable.
    #[test]
    fn every_point_of_a_chain_materializes_byte_exact(
        first in proptest::collection::vec(0u8..6, 1..40),
        edits in proptest::collection::vec(proptest::collection::vec((0usize..60, 0u8..6), 0..6), 1..8),
        level in prop_oneof![Just(0), Just(3)],
    ) {
        let d = tempfile::tempdir().unwrap();
        let store = PageStore::of(d.path());
        let mut pages = first;
        let mut points: Vec<(Put, Vec<u8>)> = Vec::new();
        let mut seen: HashSet<Vec<u8>> = HashSet::new();
        for edit in std::iter::once(Vec::new()).chain(edits) {
            for (at, b) in edit {
                if at < pages.len() { pages[at] = b } else { pages.push(b) }
            }
            let bytes = image(&pages);
            let distinct: HashSet<Vec<u8>> = bytes.chunks(PS as usize).map(<[u8]>::to_vec).collect();
            let expect_new = distinct.difference(&seen).count() as u64;
            let p = put(&store, d.path(), &bytes, level);
            prop_assert_eq!(p.new_pages, expect_new);
            prop_assert_eq!(p.pages, pages.len() as u64);
            prop_assert_eq!(p.map.page_count(), pages.len() as u64);
            if level == 0 && expect_new > 0 {
                prop_assert_eq!(p.pack_bytes, expect_new * u64::from(PS) + expect_new * 48 + 24);
            }
            if expect_new == 0 {
                prop_assert_eq!(p.pack_bytes, 0);
            }
            seen.extend(distinct);
            points.push((p, bytes));
        }
        for (p, bytes) in &points {
            prop_assert_eq!(&restore(&store, d.path(), p).unwrap(), bytes);
        }
        let maps: Vec<&PageMap> = points.iter().map(|(p, _)| &p.map).collect();
        let check = store.verify(&maps, None).unwrap();
        prop_assert!(check.points.iter().all(Option::is_none), "{:?}", check);
        // Repack everything (every pack is "small") and drop the old packs.
        if let Some(new) = store.repack(&maps, u64::MAX, 2, level).unwrap() {
            let refs: Vec<&PageMap> = new.iter().collect();
            store.collect(&refs, false).unwrap();
            prop_assert_eq!(store.packs().unwrap().len(), 1);
            for (m, (p, bytes)) in new.iter().zip(&points) {
                let again = Put { map: m.clone(), ..p.clone() };
                prop_assert_eq!(&restore(&store, d.path(), &again).unwrap(), bytes);
            }
        }
    }
}

#[test]
fn an_unchanged_state_writes_no_page() {
    let d = tempfile::tempdir().unwrap();
    let store = PageStore::of(d.path());
    let bytes = image(&[1, 2, 3, 4]);
    assert_eq!(put(&store, d.path(), &bytes, 3).new_pages, 4);
    let again = put(&store, d.path(), &bytes, 3);
    assert_eq!((again.new_pages, again.pack_bytes, store.packs().unwrap().len()), (0, 0, 1));
    assert_eq!(again.map.runs.len(), 1, "{:?}", again.map);
}

#[test]
fn a_flipped_byte_in_a_pack_marks_exactly_the_points_that_use_it() {
    let d = tempfile::tempdir().unwrap();
    let store = PageStore::of(d.path());
    let a = put(&store, d.path(), &image(&[1, 2]), 0);
    let b = put(&store, d.path(), &image(&[1, 2, 5]), 0);
    let c = put(&store, d.path(), &image(&[4, 4]), 0);
    // b's own pack holds only its page 3: damage it.
    let pack = b.map.packs[b.map.runs.last().unwrap()[0] as usize].clone();
    let path = store.pack_path(&pack);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[7] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();
    let check = store.verify(&[&a.map, &b.map, &c.map], None).unwrap();
    assert!(check.points[0].is_none() && check.points[2].is_none(), "{check:?}");
    assert!(check.points[1].as_deref().is_some_and(|p| p.starts_with("page 3:")), "{check:?}");
    assert_eq!(check.damaged_packs, [pack]);
    assert!(matches!(restore(&store, d.path(), &b), Err(StoreError::Damaged { why }) if why.starts_with("page 3")));
    for p in [&a, &c] {
        restore(&store, d.path(), p).unwrap();
    }
    // A sampled check that happens to skip the page still says nothing false about a and c.
    let sampled = store.verify(&[&a.map, &c.map], Some(2)).unwrap();
    assert!(sampled.points.iter().all(Option::is_none));
}

#[test]
fn collect_removes_only_unused_packs() {
    let d = tempfile::tempdir().unwrap();
    let store = PageStore::of(d.path());
    let a = put(&store, d.path(), &image(&[1, 2]), 3);
    let b = put(&store, d.path(), &image(&[1, 3]), 3);
    let dry = store.collect(&[&b.map], true).unwrap();
    assert_eq!((dry.packs.len(), dry.kept_packs), (0, 2), "b uses a's pack for page 1");
    let c = put(&store, d.path(), &image(&[7, 7, 7]), 3);
    let gone = store.collect(&[&a.map, &b.map], false).unwrap();
    assert_eq!(gone.packs, c.map.packs);
    assert!(gone.bytes > 0);
    restore(&store, d.path(), &b).unwrap();
    assert!(restore(&store, d.path(), &c).is_err());
}

#[test]
fn a_directory_holding_something_else_is_not_taken_over() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join(DIR)).unwrap();
    std::fs::write(d.path().join(DIR).join("mine.txt"), b"x").unwrap();
    assert!(matches!(PageStore::of(d.path()).create(), Err(StoreError::NotAStore { .. })));
    assert_eq!(std::fs::read_dir(d.path().join(DIR)).unwrap().count(), 1);
}
