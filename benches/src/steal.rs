//! Steal time: the share of the machine's vCPU time that the hypervisor gave to other guests
//! while a sample ran, from the `cpu` line of `/proc/stat`. On a shared host it is one thing
//! that moves a sample with no cause inside the guest (not the only one: a neighbour on the same
//! physical core's caches does not show in it), so every timed sample carries it (`steal_pct`)
//! and the report shows it by repetition.

/// The metric every timed sample carries: percent of the machine's CPU time stolen while it ran.
pub const METRIC: &str = "steal_pct";

/// The machine's CPU time so far, in clock ticks: all of it, and the part stolen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    total: u64,
    steal: u64,
}

impl CpuTimes {
    /// Now, or `None` where `/proc/stat` cannot be read or has no steal field.
    pub fn now() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// From the text of `/proc/stat`: its first line, `cpu  user nice system idle iowait irq
    /// softirq steal guest guest_nice`. guest time is already counted in user and nice, so the
    /// total is the first eight fields.
    pub fn parse(stat: &str) -> Option<Self> {
        let line = stat.lines().next()?;
        let mut fields = line.split_ascii_whitespace();
        if fields.next()? != "cpu" {
            return None;
        }
        let ticks: Vec<u64> = fields
            .take(8)
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        if ticks.len() < 8 {
            return None;
        }
        Some(Self {
            total: ticks.iter().sum(),
            steal: ticks[7],
        })
    }

    /// Percent of the machine's CPU time between `earlier` and `self` that was stolen; `None`
    /// when no tick passed (a sample shorter than a tick tells nothing).
    pub fn steal_pct_since(&self, earlier: &Self) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total)?;
        let steal = self.steal.checked_sub(earlier.steal)?;
        (total > 0).then(|| steal as f64 * 100.0 / total as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(user: u64, idle: u64, steal: u64) -> String {
        format!("cpu  {user} 0 100 {idle} 20 0 30 {steal} 7 0\ncpu0 1 2 3 4 5 6 7 8 9 10\nintr 1\n")
    }

    #[test]
    fn the_total_is_the_first_eight_fields_and_steal_the_eighth() {
        let t = CpuTimes::parse(&stat(1000, 500, 50)).unwrap();
        assert_eq!(t.total, 1000 + 100 + 500 + 20 + 30 + 50);
        assert_eq!(t.steal, 50);
    }

    #[test]
    fn steal_is_a_share_of_the_ticks_between_two_readings() {
        let a = CpuTimes::parse(&stat(1000, 500, 50)).unwrap();
        let b = CpuTimes::parse(&stat(1150, 520, 80)).unwrap();
        // 150 user + 20 idle + 30 steal ticks passed.
        assert_eq!(b.steal_pct_since(&a), Some(15.0));
        assert_eq!(a.steal_pct_since(&a), None);
        assert_eq!(a.steal_pct_since(&b), None);
    }

    #[test]
    fn a_kernel_without_the_steal_field_gives_nothing() {
        assert_eq!(CpuTimes::parse("cpu  1 2 3 4 5 6 7\n"), None);
        assert_eq!(CpuTimes::parse("cpu0 1 2 3 4 5 6 7 8\n"), None);
        assert_eq!(CpuTimes::parse(""), None);
    }

    #[test]
    fn this_machine_reports_its_cpu_times() {
        let a = CpuTimes::now().expect("/proc/stat with a steal field");
        assert!(a.total > 0 && a.steal <= a.total);
    }
}
