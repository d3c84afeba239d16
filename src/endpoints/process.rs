//! `authgate_build_info` and the standard process metrics, named as the Prometheus client
//! libraries name them (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_open_fds`, `process_max_fds`, `process_start_time_seconds`), so existing
//! dashboards and alerts work unchanged.
//!
//! Read from `/proc/self` at each scrape (Linux). Elsewhere, or when `/proc` cannot be read,
//! the process series are left out: a missing series is honest, a zero would not be.

use std::fmt::Write;

/// The git revision the binary was built from (`build.rs`), or `unknown`.
pub const REVISION: &str = env!("AUTHGATE_REVISION");

/// CPU time is counted in clock ticks of `USER_HZ`, which Linux fixes at 100 for user space
/// (what Prometheus' own procfs reader assumes too).
const USER_HZ: f64 = 100.0;

/// Append the build info and the process series.
pub fn render(out: &mut String) {
    let _ = writeln!(
        out,
        "# HELP authgate_build_info The running build: version and git revision (always 1).\n\
         # TYPE authgate_build_info gauge\n\
         authgate_build_info{{version=\"{}\",revision=\"{REVISION}\"}} 1",
        env!("CARGO_PKG_VERSION"),
    );
    if let Some(p) = Process::read() {
        p.render(out);
    }
}

/// One reading of `/proc/self`.
#[derive(Debug, Default, PartialEq)]
struct Process {
    cpu_seconds: f64,
    resident_bytes: u64,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
    start_time_seconds: Option<f64>,
}

impl Process {
    fn read() -> Option<Process> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok();
        let limits = std::fs::read_to_string("/proc/self/limits").ok();
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|dir| dir.count() as u64);
        let mut p = parse(&stat, &status, boot.as_deref(), limits.as_deref())?;
        p.open_fds = open_fds;
        Some(p)
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n\
             # TYPE process_cpu_seconds_total counter\n\
             process_cpu_seconds_total {}\n\
             # HELP process_resident_memory_bytes Resident memory size in bytes.\n\
             # TYPE process_resident_memory_bytes gauge\n\
             process_resident_memory_bytes {}",
            self.cpu_seconds, self.resident_bytes
        );
        if let Some(n) = self.open_fds {
            let _ = writeln!(
                out,
                "# HELP process_open_fds Number of open file descriptors.\n\
                 # TYPE process_open_fds gauge\n\
                 process_open_fds {n}"
            );
        }
        if let Some(n) = self.max_fds {
            let _ = writeln!(
                out,
                "# HELP process_max_fds Maximum number of open file descriptors.\n\
                 # TYPE process_max_fds gauge\n\
                 process_max_fds {n}"
            );
        }
        if let Some(t) = self.start_time_seconds {
            let _ = writeln!(
                out,
                "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n\
                 # TYPE process_start_time_seconds gauge\n\
                 process_start_time_seconds {t}"
            );
        }
    }
}

/// `stat`: `/proc/self/stat`; `status`: `/proc/self/status`; `boot`: `/proc/stat` (for
/// `btime`); `limits`: `/proc/self/limits`.
fn parse(stat: &str, status: &str, boot: Option<&str>, limits: Option<&str>) -> Option<Process> {
    // The command name (field 2) is in parentheses and may hold spaces or `)`: the fields
    // after it start after the last `)`. There, index 0 is field 3 (state).
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    let ticks = field(14)? + field(15)?;
    let start_ticks = field(22)?;
    let resident_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let btime: Option<u64> = boot.and_then(|b| {
        b.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse().ok())
    });
    let max_fds = limits.and_then(|l| {
        let line = l.lines().find(|l| l.starts_with("Max open files"))?;
        line["Max open files".len()..]
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    });
    Some(Process {
        cpu_seconds: ticks as f64 / USER_HZ,
        resident_bytes: resident_kib * 1024,
        open_fds: None,
        max_fds,
        start_time_seconds: btime.map(|b| b as f64 + start_ticks as f64 / USER_HZ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (auth gate) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 125 0 0 20 0 8 0 360000 123456789 2048 18446744073709551615 1 1 0 0 0 0 0 4096 17647 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0";
    const STATUS: &str = "Name:\tauthgate\nVmPeak:\t  20000 kB\nVmRSS:\t    8192 kB\nThreads:\t8\n";
    const BOOT: &str = "cpu  1 2 3\nbtime 1700000000\nprocesses 10\n";
    const LIMITS: &str = "Limit                     Soft Limit           Hard Limit           Units     \nMax open files            1048576              1048576              files     \n";

    #[test]
    fn reads_the_proc_files() {
        let p = parse(STAT, STATUS, Some(BOOT), Some(LIMITS)).unwrap();
        assert_eq!(
            p,
            Process {
                cpu_seconds: 3.75,
                resident_bytes: 8192 * 1024,
                open_fds: None,
                max_fds: Some(1_048_576),
                start_time_seconds: Some(1_700_003_600.0),
            }
        );
        let p = parse(STAT, STATUS, None, None).unwrap();
        assert_eq!(p.start_time_seconds, None);
        assert_eq!(p.max_fds, None);
        assert_eq!(parse("garbage", STATUS, None, None), None);
    }

    #[test]
    fn renders_this_process() {
        let mut out = String::new();
        render(&mut out);
        assert!(out.contains("authgate_build_info{version=\""), "{out}");
        if cfg!(target_os = "linux") {
            for name in [
                "process_cpu_seconds_total ",
                "process_resident_memory_bytes ",
                "process_open_fds ",
                "process_start_time_seconds ",
            ] {
                assert!(out.contains(name), "{name}: {out}");
            }
        }
    }
}
