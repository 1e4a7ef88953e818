//! Small helpers with no better home: randomness, URL decoding, and the
//! system side of daemon life (privileges, open-files limit).

/// A fast non-cryptographic generator (xorshift64*), seeded from the kernel.
/// Port order and SSRCs only need to be unpredictable to a casual observer,
/// not secret.
pub struct Random {
    state: u64,
}

impl Random {
    /// Seeds from getrandom(2), falling back to the clock and pid.
    pub fn new() -> Random {
        let mut seed = [0u8; 8];
        // SAFETY: the buffer is valid for 8 bytes of writes.
        let got = unsafe { nix::libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
        let mut state = u64::from_ne_bytes(seed);
        if got != 8 || state == 0 {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            state = (now.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32) | 1;
        }
        Random { state }
    }

    /// Seeds deterministically (tests).
    pub fn with_seed(seed: u64) -> Random {
        Random { state: seed | 1 }
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..bound` (bound > 0).
    pub fn below(&mut self, bound: usize) -> usize {
        if bound == 0 {
            return 0;
        }
        (self.next_u64() % bound as u64) as usize
    }

    /// Shuffles a slice in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

impl Default for Random {
    fn default() -> Self {
        Random::new()
    }
}

/// Decodes `%XX` escapes (and `+` as space is NOT applied: the notify tag
/// is opaque); `None` on a malformed escape.
pub fn url_unquote(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' {
            let hi = input.get(i + 1).and_then(|c| (*c as char).to_digit(16))?;
            let lo = input.get(i + 2).and_then(|c| (*c as char).to_digit(16))?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The account `-u user[:group]` names, resolved at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub uid: nix::unistd::Uid,
    pub gid: nix::unistd::Gid,
    pub user: String,
}

/// Resolves `user[:group]`; without a group, the user's primary group.
pub fn resolve_run_as(user: &str, group: Option<&str>) -> Result<RunAs, String> {
    use nix::unistd::{Group, User};
    let u = User::from_name(user)
        .map_err(|e| format!("can't look up user {user}: {e}"))?
        .ok_or_else(|| format!("unknown user {user}"))?;
    let gid = match group {
        None => u.gid,
        Some(g) => {
            Group::from_name(g)
                .map_err(|e| format!("can't look up group {g}: {e}"))?
                .ok_or_else(|| format!("unknown group {g}"))?
                .gid
        }
    };
    Ok(RunAs {
        uid: u.uid,
        gid,
        user: u.name,
    })
}

/// True when the process already is `run` (real and effective ids), so
/// switching needs no privileges.
pub fn already_running_as(run: &RunAs) -> bool {
    use nix::unistd::{getegid, geteuid, getgid, getuid};
    getuid() == run.uid && geteuid() == run.uid && getgid() == run.gid && getegid() == run.gid
}

/// Drops root for good: supplementary groups, then gid, then uid (real,
/// effective and saved ids alike), and checks by reading them back that
/// none of root's identity is left and that it cannot be taken back.
pub fn drop_privileges(run: &RunAs) -> Result<(), String> {
    use nix::unistd::{getgroups, getresgid, getresuid, setgid, setgroups, setuid, Uid};
    if !nix::unistd::geteuid().is_root() {
        // Nothing to give up when we already are that account; anything
        // else needs root, and setgroups would fail with a vaguer error.
        return if already_running_as(run) {
            Ok(())
        } else {
            Err(format!("switching to user {} needs root", run.user))
        };
    }
    // The classic daemon kept every supplementary group of root when only
    // a user was given; the list is replaced by the one group we run as.
    setgroups(&[run.gid]).map_err(|e| format!("setgroups: {e}"))?;
    setgid(run.gid).map_err(|e| format!("setgid: {e}"))?;
    setuid(run.uid).map_err(|e| format!("setuid: {e}"))?;
    let uids = getresuid().map_err(|e| format!("getresuid: {e}"))?;
    let gids = getresgid().map_err(|e| format!("getresgid: {e}"))?;
    let groups = getgroups().map_err(|e| format!("getgroups: {e}"))?;
    let all_uids = [uids.real, uids.effective, uids.saved];
    let all_gids = [gids.real, gids.effective, gids.saved];
    if all_uids.iter().any(|&u| u != run.uid)
        || all_gids.iter().any(|&g| g != run.gid)
        || groups.iter().any(|&g| g != run.gid)
        || (!run.uid.is_root() && setuid(Uid::from_raw(0)).is_ok())
    {
        return Err("privileges were not dropped completely".into());
    }
    Ok(())
}

/// Fails unless `run` (without `-u`: the current user) may create files in
/// `dir`: a recording or spool directory the daemon cannot write to would
/// only show as calls silently not recorded. As root the check borrows
/// `run`'s identity for a moment (effective ids only: the saved uid stays
/// root, so it can come back), which lets it run before anything is opened.
pub fn check_writable_dir(dir: &std::path::Path, run: Option<&RunAs>) -> Result<(), String> {
    use nix::unistd::{
        eaccess, getegid, geteuid, getgroups, setegid, seteuid, setgroups, AccessFlags,
    };
    let check = || {
        eaccess(dir, AccessFlags::W_OK | AccessFlags::X_OK).map_err(|e| match run {
            Some(run) => format!("{} is not writable by {}: {e}", dir.display(), run.user),
            None => format!("{} is not writable: {e}", dir.display()),
        })
    };
    let Some(run) = run.filter(|_| geteuid().is_root()) else {
        return check();
    };
    let (uid, gid) = (geteuid(), getegid());
    let groups = getgroups().map_err(|e| format!("getgroups: {e}"))?;
    let result = match setgroups(&[run.gid])
        .and_then(|()| setegid(run.gid))
        .and_then(|()| seteuid(run.uid))
    {
        Ok(()) => check(),
        Err(e) => Err(format!(
            "can't check {} as {}: {e}",
            dir.display(),
            run.user
        )),
    };
    seteuid(uid)
        .and_then(|()| setegid(gid))
        .and_then(|()| setgroups(&groups))
        .map_err(|e| format!("can't return to root after checking {}: {e}", dir.display()))?;
    result
}

/// Descriptors above stderr that the process was started with (from
/// `/proc/self/fd`; none where that does not exist).
pub fn inherited_fds() -> Vec<std::os::fd::RawFd> {
    use nix::fcntl::{fcntl, FcntlArg};
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let listed: Vec<std::os::fd::RawFd> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    // The listing's own descriptor is closed again by now.
    listed
        .into_iter()
        .filter(|&fd| fcntl(fd, FcntlArg::F_GETFD).is_ok())
        .collect()
}

/// Closes descriptors the daemon inherited but does not use: a pipe of
/// the shell or script that started it would otherwise stay open for as
/// long as the daemon runs, and whoever reads its other end would wait.
pub fn close_fds(fds: &[std::os::fd::RawFd]) {
    for &fd in fds {
        let _ = nix::unistd::close(fd);
    }
}

/// Descriptors counted per session for the open-files warning: the RTP
/// and RTCP sockets of both legs, plus one for a recording or a copy.
pub const FDS_PER_SESSION: u64 = 5;

/// The current soft limit on open files.
pub fn nofile_limit() -> u64 {
    use nix::sys::resource::{getrlimit, Resource};
    getrlimit(Resource::RLIMIT_NOFILE).map_or(u64::MAX, |(soft, _)| soft)
}

/// Sets the open-files limit to `want` (`-L`). When the system grants less
/// (not root and above the hard limit, or above the kernel's ceiling) the
/// limit is raised as far as allowed; returns what is in force now.
pub fn raise_nofile(want: u64) -> Result<u64, String> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if setrlimit(Resource::RLIMIT_NOFILE, want, want).is_err() {
        let (_, hard) =
            getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| format!("getrlimit: {e}"))?;
        setrlimit(Resource::RLIMIT_NOFILE, want.min(hard), hard)
            .map_err(|e| format!("can't set the open files limit to {want}: {e}"))?;
    }
    Ok(nofile_limit())
}

/// True when `active` sessions may need 80% or more of `limit` descriptors.
pub fn nofile_warning(active: usize, limit: u64) -> bool {
    // active * FDS_PER_SESSION >= limit * 4 / 5, without rounding or overflow.
    (active as u128) * u128::from(FDS_PER_SESSION) * 5 >= u128::from(limit) * 4
}

/// Warns once, the first time the sessions come near the open-files limit
/// (see `-L` in the man page); meant for the once-a-second timer.
#[derive(Debug)]
pub struct NofileWatch {
    limit: u64,
    warned: bool,
}

impl NofileWatch {
    /// Watches against the limit in force now.
    pub fn new() -> NofileWatch {
        NofileWatch {
            limit: nofile_limit(),
            warned: false,
        }
    }

    /// Logs a warning the first time `active` sessions come within 80% of
    /// the limit; true when it did.
    pub fn check(&mut self, active: usize) -> bool {
        if self.warned || !nofile_warning(active, self.limit) {
            return false;
        }
        self.warned = true;
        crate::rtpp_log!(
            Warn,
            "{active} sessions may use {} of the {} open files allowed; raise the limit with -L",
            (active as u64).saturating_mul(FDS_PER_SESSION),
            self.limit
        );
        true
    }
}

impl Default for NofileWatch {
    fn default() -> Self {
        NofileWatch::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unquote_decodes_and_rejects() {
        assert_eq!(url_unquote(b"a%20b%2F").as_deref(), Some(&b"a b/"[..]));
        assert_eq!(url_unquote(b"plain").as_deref(), Some(&b"plain"[..]));
        assert_eq!(url_unquote(b"bad%2"), None);
        assert_eq!(url_unquote(b"bad%zz"), None);
    }

    #[test]
    fn shuffle_keeps_elements() {
        let mut r = Random::with_seed(42);
        let mut v: Vec<u32> = (0..100).collect();
        r.shuffle(&mut v);
        let mut sorted = v.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_ne!(v, sorted);
    }

    #[test]
    fn nofile_warning_at_eighty_percent() {
        // 1000 descriptors: 800 are 160 sessions of 5.
        assert!(!nofile_warning(159, 1000));
        assert!(nofile_warning(160, 1000));
        assert!(nofile_warning(1000, 1000));
        assert!(!nofile_warning(0, 1000));
        // Rounding: 80% of 1024 is 819.2, reached by 164 sessions (820).
        assert!(!nofile_warning(163, 1024));
        assert!(nofile_warning(164, 1024));
        assert!(!nofile_warning(1_000_000, u64::MAX));
        assert!(nofile_warning(usize::MAX, u64::MAX));
    }

    #[test]
    fn nofile_watch_warns_once() {
        let mut w = NofileWatch {
            limit: 100,
            warned: false,
        };
        assert!(!w.check(15));
        assert!(w.check(16));
        assert!(!w.check(17));
        assert!(!w.check(100));
    }

    #[test]
    fn writable_dir_check() {
        assert!(check_writable_dir(&std::env::temp_dir(), None).is_ok());
        assert!(check_writable_dir(std::path::Path::new("/nonexistent/dir"), None).is_err());
    }
}
