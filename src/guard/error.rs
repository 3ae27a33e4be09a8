//! Where the error types used to live; each now belongs to the module that raises it.
//!
//! Re-exports only, kept so `sqlite_warden::guard::error::X` paths keep working.

pub use crate::guard::audit::AuditError;
pub use crate::guard::connect::OpenError;
pub use crate::guard::lock::LockError;
pub(crate) use crate::guard::lock::holder_text;
pub use crate::guard::vfs::RegisterError;
pub use crate::storage::ProbeError;
