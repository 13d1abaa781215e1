//! What the benches read of the machines they run on: Redis's `INFO` fields (its CPU time,
//! memory, commands), this process's own CPU time, and the host's busy CPU time.

use anyhow::{Context, Result};

/// `INFO <section>` of the Redis at `url`, as text.
pub fn redis_info(url: &str, section: &str) -> Result<String> {
    let mut con = redis::Client::open(url)?.get_connection()?;
    let info: String = redis::cmd("INFO").arg(section).query(&mut con)?;
    Ok(info)
}

/// The value of `name` in an `INFO` reply (`name:value` lines), as a number.
pub fn info_field(info: &str, name: &str) -> Option<f64> {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|value| value.trim().parse().ok())
}

/// CPU seconds a Redis server has used (user and system, all its threads) in an `INFO cpu`
/// reply.
pub fn redis_cpu_in(info: &str) -> Result<f64> {
    let field = |name| info_field(info, name).with_context(|| format!("INFO cpu has no {name}"));
    Ok(field("used_cpu_user")? + field("used_cpu_sys")?)
}

/// CPU seconds the Redis server at `url` has used: the resource the benches are bound by, and
/// one that a busy shared machine does not distort as it does wall time.
pub fn redis_cpu_seconds(url: &str) -> Result<f64> {
    redis_cpu_in(&redis_info(url, "cpu")?)
}

/// CPU seconds this process has used (user and system, all threads).
pub fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// The host's CPU time from `/proc/stat`'s first line, in ticks: (busy, total). Busy is all
/// but idle and iowait.
pub fn host_cpu_in(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .map(|n| n.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice, already in user/nice]
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// The host's (busy, total) CPU ticks now; zeros where `/proc/stat` cannot be read.
pub fn host_cpu() -> (u64, u64) {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|stat| host_cpu_in(&stat))
        .unwrap_or((0, 0))
}

/// The host's CPUs, as `/proc/stat` counts them.
pub fn host_cpus() -> usize {
    std::fs::read_to_string("/proc/stat")
        .map(|stat| {
            stat.lines()
                .filter(|l| {
                    l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit)
                })
                .count()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO_CPU: &str = "# CPU\r\nused_cpu_sys:1.250000\r\nused_cpu_user:3.500000\r\n\
        used_cpu_sys_children:0.000000\r\nused_cpu_user_children:0.000000\r\n\
        used_cpu_sys_main_thread:1.200000\r\nused_cpu_user_main_thread:3.400000\r\n";

    #[test]
    fn redis_cpu_is_user_plus_sys_of_the_whole_server() {
        assert_eq!(redis_cpu_in(INFO_CPU).unwrap(), 4.75);
        assert_eq!(info_field(INFO_CPU, "used_cpu_sys"), Some(1.25));
        // A name that another begins with is not mistaken for it.
        assert_eq!(info_field(INFO_CPU, "used_cpu"), None);
        let err = redis_cpu_in("# CPU\r\nused_cpu_sys:1.0\r\n").unwrap_err();
        assert!(err.to_string().contains("used_cpu_user"), "{err}");
    }

    #[test]
    fn info_fields_in_other_sections() {
        let info = "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\n\
            # Stats\r\ntotal_commands_processed:42\r\n";
        assert_eq!(info_field(info, "used_memory"), Some(1_048_576.0));
        assert_eq!(info_field(info, "used_memory_human"), None, "not a number");
        assert_eq!(info_field(info, "total_commands_processed"), Some(42.0));
    }

    #[test]
    fn host_cpu_busy_excludes_idle_and_iowait() {
        let stat = "cpu  100 5 50 1000 20 3 2 1 7 0\ncpu0 50 2 25 500 10 1 1 0 0 0\n";
        // busy = 100 + 5 + 50 + 3 + 2 + 1; total adds idle 1000 and iowait 20 (guest is in user)
        assert_eq!(host_cpu_in(stat), Some((161, 1181)));
        assert_eq!(host_cpu_in("cpu0 1 2 3 4\n"), None);
        assert_eq!(host_cpu_in(""), None);
    }
}
