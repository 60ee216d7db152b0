//! `lmdb:` tables: one LMDB file (`MDB_NOSUBDIR`), no lock file
//! (`MDB_NOLOCK`), the unnamed database, as Postfix's dict_lmdb keeps them.
//!
//! Without LMDB's own lock file, Postfix serializes with `fcntl` locks on
//! the data file, and so does this module: a build takes a write lock (it
//! waits for readers in flight), then holds a read lock (other builders
//! wait, readers go on: they see the old snapshot until the build commits);
//! each lookup holds a read lock. The map starts at `lmdb_map_size`'s
//! default (16 MiB), or the file's size plus 10240 bytes when larger, and a
//! build that fills it starts again with twice the size.

use std::ffi::{c_int, c_uint, CString};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use lmdb_master_sys as ffi;

const MAP_SIZE: usize = 16 * 1024 * 1024;
const PAGE: usize = 4096;

fn error(rc: c_int, what: &str) -> std::io::Error {
    if rc > 0 {
        return std::io::Error::from_raw_os_error(rc);
    }
    // SAFETY: mdb_strerror returns a static string for any code.
    let text = unsafe { std::ffi::CStr::from_ptr(ffi::mdb_strerror(rc)) };
    std::io::Error::other(format!("{what}: {}", text.to_string_lossy()))
}

fn check(rc: c_int, what: &str) -> std::io::Result<()> {
    match rc {
        0 => Ok(()),
        rc => Err(error(rc, what)),
    }
}

/// A whole-file `fcntl` lock on `fd` (`F_RDLCK`, `F_WRLCK` or `F_UNLCK`).
fn fcntl_lock(fd: c_int, kind: c_int) -> std::io::Result<()> {
    // SAFETY: a zeroed flock is a valid whole-file request once its type is set.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: fd is open for the life of this call.
    if unsafe { libc::fcntl(fd, libc::F_SETLKW, &fl) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The map size for a file of `len` bytes: Postfix's rule, page-aligned.
fn map_size(len: u64) -> usize {
    let want = (len as usize + 10240).max(MAP_SIZE);
    want.div_ceil(PAGE) * PAGE
}

struct Env {
    raw: *mut ffi::MDB_env,
    dbi: ffi::MDB_dbi,
    /// A descriptor of the data file for the fcntl locks; kept open as long
    /// as the environment (closing any descriptor of the file would drop
    /// this process's fcntl locks on it).
    lock: std::fs::File,
}

impl Env {
    fn open(path: &Path, read_only: bool, size: usize) -> std::io::Result<Self> {
        let lock = std::fs::OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)?;
        let cpath = CString::new(path.as_os_str().as_bytes())?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: each call gets valid pointers; on failure the environment
        // is closed before returning.
        unsafe {
            check(ffi::mdb_env_create(&mut raw), "mdb_env_create")?;
            let mut flags = ffi::MDB_NOSUBDIR | ffi::MDB_NOLOCK;
            if read_only {
                flags |= ffi::MDB_RDONLY;
            }
            let opened = check(ffi::mdb_env_set_mapsize(raw, size), "mdb_env_set_mapsize")
                .and_then(|()| {
                    check(
                        ffi::mdb_env_open(raw, cpath.as_ptr(), flags, 0o644),
                        &format!("open database {}", path.display()),
                    )
                });
            if let Err(e) = opened {
                ffi::mdb_env_close(raw);
                return Err(e);
            }
        }
        let mut env = Self { raw, dbi: 0, lock };
        let txn = env.begin(read_only)?;
        // SAFETY: txn is live; the unnamed database always exists.
        let rc = unsafe { ffi::mdb_dbi_open(txn, std::ptr::null(), 0, &mut env.dbi) };
        // SAFETY: ends the transaction begun above.
        unsafe { ffi::mdb_txn_abort(txn) };
        check(rc, "mdb_dbi_open")?;
        Ok(env)
    }

    fn begin(&mut self, read_only: bool) -> std::io::Result<*mut ffi::MDB_txn> {
        let flags: c_uint = if read_only { ffi::MDB_RDONLY } else { 0 };
        let mut txn = std::ptr::null_mut();
        // SAFETY: the environment is open.
        let mut rc = unsafe { ffi::mdb_txn_begin(self.raw, std::ptr::null_mut(), flags, &mut txn) };
        if rc == ffi::MDB_MAP_RESIZED {
            // A builder grew the map: adopt its size.
            // SAFETY: no transaction of this process is active.
            unsafe {
                ffi::mdb_env_set_mapsize(self.raw, 0);
                rc = ffi::mdb_txn_begin(self.raw, std::ptr::null_mut(), flags, &mut txn);
            }
        }
        check(rc, "mdb_txn_begin")?;
        Ok(txn)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // SAFETY: closed once; no transaction is open.
        unsafe { ffi::mdb_env_close(self.raw) };
    }
}

fn val(b: &[u8]) -> ffi::MDB_val {
    ffi::MDB_val {
        mv_size: b.len(),
        mv_data: b.as_ptr() as *mut _,
    }
}

/// Copies what an MDB_val points at.
///
/// # Safety
/// `v` must come from LMDB within a live transaction.
unsafe fn bytes(v: &ffi::MDB_val) -> Vec<u8> {
    // SAFETY: by the caller's promise, mv_data holds mv_size bytes.
    unsafe { std::slice::from_raw_parts(v.mv_data.cast::<u8>(), v.mv_size) }.to_vec()
}

/// An open LMDB table.
pub struct Table {
    env: Env,
}

// SAFETY: used by one thread at a time (behind `&mut` or a mutex); read
// transactions are begun and ended within each call.
unsafe impl Send for Table {}

impl Table {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let len = std::fs::metadata(path)?.len();
        Ok(Self {
            env: Env::open(path, true, map_size(len))?,
        })
    }

    pub fn get(&mut self, key: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
        let fd = self.env.lock.as_raw_fd();
        fcntl_lock(fd, libc::F_RDLCK)?;
        let result = self.env.begin(true).and_then(|txn| {
            let mut k = val(key);
            let mut v = val(&[]);
            // SAFETY: txn is live; v is copied before the transaction ends.
            let out = match unsafe { ffi::mdb_get(txn, self.env.dbi, &mut k, &mut v) } {
                0 => Ok(Some(unsafe { bytes(&v) })),
                ffi::MDB_NOTFOUND => Ok(None),
                rc => Err(error(rc, "lookup")),
            };
            // SAFETY: ends the read transaction.
            unsafe { ffi::mdb_txn_abort(txn) };
            out
        });
        fcntl_lock(fd, libc::F_UNLCK)?;
        result
    }

    pub fn records(&mut self) -> std::io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let fd = self.env.lock.as_raw_fd();
        fcntl_lock(fd, libc::F_RDLCK)?;
        let result = self.env.begin(true).and_then(|txn| {
            let mut cursor = std::ptr::null_mut();
            // SAFETY: txn is live; the cursor is closed before it ends.
            let out = unsafe {
                check(
                    ffi::mdb_cursor_open(txn, self.env.dbi, &mut cursor),
                    "cursor",
                )
                .map(|()| {
                    let mut out = Vec::new();
                    let (mut k, mut v) = (val(&[]), val(&[]));
                    let mut op = ffi::MDB_FIRST;
                    while ffi::mdb_cursor_get(cursor, &mut k, &mut v, op) == 0 {
                        out.push((bytes(&k), bytes(&v)));
                        op = ffi::MDB_NEXT;
                    }
                    ffi::mdb_cursor_close(cursor);
                    out
                })
            };
            // SAFETY: ends the read transaction.
            unsafe { ffi::mdb_txn_abort(txn) };
            out
        });
        fcntl_lock(fd, libc::F_UNLCK)?;
        result
    }
}

/// Rebuilds `path` in place: one write transaction empties the database and
/// stores `records`; readers see the old contents until it commits.
pub fn build(path: &Path, records: &[(Vec<u8>, Vec<u8>)]) -> std::io::Result<()> {
    // Created 0644 (subject to the umask), as Postfix's tables are.
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    let mut size = map_size(std::fs::metadata(path)?.len());
    loop {
        let mut env = Env::open(path, false, size)?;
        let fd = env.lock.as_raw_fd();
        fcntl_lock(fd, libc::F_WRLCK)?;
        fcntl_lock(fd, libc::F_RDLCK)?;
        let txn = env.begin(false)?;
        let mut rc = 0;
        // SAFETY: txn is live until committed or aborted below.
        unsafe {
            rc = match ffi::mdb_drop(txn, env.dbi, 0) {
                0 => rc,
                e => e,
            };
            for (k, v) in records {
                if rc != 0 {
                    break;
                }
                let (mut kv, mut vv) = (val(k), val(v));
                rc = match ffi::mdb_put(txn, env.dbi, &mut kv, &mut vv, ffi::MDB_NOOVERWRITE) {
                    ffi::MDB_KEYEXIST => 0,
                    e => e,
                };
            }
            if rc == 0 {
                rc = ffi::mdb_txn_commit(txn);
            } else {
                ffi::mdb_txn_abort(txn);
            }
        }
        match rc {
            0 => return Ok(()),
            ffi::MDB_MAP_FULL if size < usize::MAX / 4 => size *= 2,
            rc => return Err(error(rc, &format!("update {}", path.display()))),
        }
    }
}
