//! What Linux's `/proc` says about a process: CPU time and memory.
//!
//! chat-bench runs the server's load and reads the server's figures from
//! outside, by process id, so it works for any server (ours, tonic, Go):
//!
//! * CPU: fields 14 and 15 of `/proc/PID/stat` (`utime`, `stime`), in clock
//!   ticks. The second field, the command name, is in parentheses and may
//!   itself contain spaces and parentheses, so fields are counted from the
//!   *last* `)`.
//! * Memory: the `VmHWM` (peak resident set) and `VmRSS` lines of
//!   `/proc/PID/status`, in kB.
//!
//! The parsers are pure functions over the file's text; the readers return
//! `None` when the file cannot be read (another OS, a process that exited).

/// Clock ticks per second of `utime`/`stime`. `USER_HZ` is 100 on every
/// Linux architecture chat-bench runs on (it is fixed in the kernel ABI and
/// does not follow `CONFIG_HZ`).
pub const USER_HZ: f64 = 100.0;

/// `utime + stime`, in seconds, from the text of a `/proc/PID/stat` file.
pub fn parse_stat_cpu_s(stat: &str) -> Option<f64> {
    // "pid (comm) state ppid ..." — after "(comm) " the fields are numbered
    // from 3 (state), so utime (14) and stime (15) are at indexes 11 and 12.
    let after_comm = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = after_comm.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// The value in kB of the line `key` (`"VmHWM"`, `"VmRSS"`) of a
/// `/proc/PID/status` file.
pub fn parse_status_kb(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        value.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// The soft and hard limits on open files, from `/proc/self/limits`
/// (`u64::MAX` for "unlimited").
pub fn parse_open_files_limits(limits: &str) -> Option<(u64, u64)> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut values = line["Max open files".len()..].split_whitespace();
    let mut next = || match values.next()? {
        "unlimited" => Some(u64::MAX),
        v => v.parse().ok(),
    };
    Some((next()?, next()?))
}

/// CPU seconds used so far by process `pid` (`"self"` for this one).
pub fn cpu_s(pid: &str) -> Option<f64> {
    parse_stat_cpu_s(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The `/proc/PID/status` line `key`, in kB.
pub fn status_kb(pid: u32, key: &str) -> Option<u64> {
    parse_status_kb(
        &std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
        key,
    )
}

/// This process's limits on open files (soft, hard).
pub fn open_files_limits() -> Option<(u64, u64)> {
    parse_open_files_limits(&std::fs::read_to_string("/proc/self/limits").ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_counts_fields_after_the_last_parenthesis() {
        // A command name with a space and a ')' in it; utime 250, stime 50.
        let stat = "4242 (chat (srv) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 \
                    3 0 12345 1000000 500 18446744073709551615";
        assert_eq!(parse_stat_cpu_s(stat), Some(3.0));
        assert_eq!(parse_stat_cpu_s("4242 (x) S 1 2"), None);
        assert_eq!(parse_stat_cpu_s("garbage"), None);
    }

    #[test]
    fn status_lines() {
        let status =
            "Name:\tchat-server\nVmPeak:\t  99999 kB\nVmHWM:\t   58123 kB\nVmRSS:\t   41000 kB\n";
        assert_eq!(parse_status_kb(status, "VmHWM"), Some(58123));
        assert_eq!(parse_status_kb(status, "VmRSS"), Some(41000));
        assert_eq!(parse_status_kb(status, "VmSwap"), None);
        // "Vm" is a prefix of every key, not a key.
        assert_eq!(parse_status_kb(status, "Vm"), None);
    }

    #[test]
    fn open_files() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(parse_open_files_limits(limits), Some((1024, 524_288)));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(
            parse_open_files_limits(unlimited),
            Some((u64::MAX, u64::MAX))
        );
    }
}
