//! Small helpers with no better home: randomness and URL decoding.

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
        .ok_or_else(|| format!("unknown user: {user}"))?;
    let gid = match group {
        None => u.gid,
        Some(g) => {
            Group::from_name(g)
                .map_err(|e| format!("can't look up group {g}: {e}"))?
                .ok_or_else(|| format!("unknown group: {g}"))?
                .gid
        }
    };
    Ok(RunAs {
        uid: u.uid,
        gid,
        user: u.name,
    })
}

/// Drops root for good: supplementary groups, then gid, then uid, and
/// checks by reading them back that none of root's identity is left.
pub fn drop_privileges(run: &RunAs) -> Result<(), String> {
    use nix::unistd::{getegid, geteuid, getgid, getgroups, getuid, setgid, setgroups, setuid};
    setgroups(&[run.gid]).map_err(|e| format!("setgroups: {e}"))?;
    setgid(run.gid).map_err(|e| format!("setgid: {e}"))?;
    setuid(run.uid).map_err(|e| format!("setuid: {e}"))?;
    let groups = getgroups().map_err(|e| format!("getgroups: {e}"))?;
    if getuid() != run.uid
        || geteuid() != run.uid
        || getgid() != run.gid
        || getegid() != run.gid
        || groups.iter().any(|&g| g != run.gid)
    {
        return Err("privileges were not dropped completely".into());
    }
    Ok(())
}
