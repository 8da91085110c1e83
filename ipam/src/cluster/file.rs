//! The embedded cluster store: one JSON file under `flock`, written atomically and
//! durably. Enough for one machine or a shared file system.

use std::path::PathBuf;

pub struct FileStore {
    pub(crate) path: PathBuf,
}
