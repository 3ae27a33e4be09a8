//! Pure SQLite file-format knowledge: no I/O policy, no locks, no `unsafe`.
//!
//! Owns: the 100-byte header ([`header`], the one decoder), the names of a database's side
//! files ([`names`]), the raw WAL / rollback-journal scan ([`scan`]) and the b-tree page
//! reader ([`pages`]). Does not own where live bytes come from: a live database is read
//! through SQLite's VFS (see `sys::sqlite`), never a `std::fs` descriptor that could drop
//! the process's locks.

pub mod header;
pub mod names;
pub mod pages;
pub mod scan;
