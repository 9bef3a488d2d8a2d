//! The user and group this process runs as: the one place that asks the
//! kernel (`getuid(2)` and friends), so callers need no `unsafe`.

/// The real user id.
pub fn uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// The real group id.
pub fn gid() -> u32 {
    // SAFETY: getgid has no preconditions and cannot fail.
    unsafe { libc::getgid() }
}

/// The effective user id: what the kernel checks permissions against.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Whether the process runs with root's permissions (effective uid 0).
pub fn is_root() -> bool {
    euid() == 0
}
