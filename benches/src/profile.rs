//! `--profile DIR`: where gembok's sidecars spend their CPU under a scenario's load. After the
//! measured repetitions (so no reported figure carries perf's overhead), the load runs once
//! more with `perf record` attached to both sidecar processes (`cpu-clock` samples, which every
//! machine has, and DWARF call graphs: the release build keeps no frame pointers). The samples
//! are folded with inferno into a flamegraph SVG and a summary: the kernel by system call (and
//! the share of softirq, the loopback receiver's packet processing, inside them), crypto,
//! memory copies, the allocator, and the rest of user space, for both sidecars together and
//! for each (by the process id of each sample).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use inferno::collapse::Collapse;

use crate::procs::{self, Proc};
use crate::sys::Sig;

/// Samples per second per CPU: enough for a few thousand samples in a few seconds, few enough
/// that perf's own work stays small beside the sidecars'.
const FREQUENCY: &str = "499";

/// A `perf record` attached to some processes.
pub struct Recording {
    proc: Proc,
    data: PathBuf,
    pids: Vec<u32>,
}

impl Recording {
    /// Attaches to every thread of `pids`; returns once perf has started writing `data`.
    pub fn start(pids: &[u32], data: PathBuf) -> Result<Self> {
        let _ = std::fs::remove_file(&data);
        let list: Vec<String> = pids.iter().map(u32::to_string).collect();
        let mut cmd = procs::command("perf");
        cmd.args(["record", "-q", "-e", "cpu-clock", "-F", FREQUENCY])
            .args(["--call-graph", "dwarf,16384", "-o"])
            .arg(&data)
            .arg("-p")
            .arg(list.join(","));
        let log = data.with_extension("log");
        let proc = procs::spawn("perf-record", cmd, &log)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(&data).map_or(true, |m| m.len() == 0) {
            if let Some(status) = procs::exited(&proc) {
                bail!(
                    "perf record exited ({status}): {}",
                    procs::log_tail(&proc, 5)
                );
            }
            if Instant::now() > deadline {
                procs::stop(&proc);
                bail!(
                    "perf record did not start writing {} within 10 s",
                    data.display()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(Self {
            proc,
            data,
            pids: pids.to_vec(),
        })
    }

    /// Stops recording (SIGINT: perf finishes its file) and folds the samples of each process
    /// apart, in the order of `start`'s `pids`: one `frame;frame;...;leaf count` line per
    /// distinct stack, kernel frames marked `_[k]`.
    pub fn finish(self) -> Result<Vec<Vec<String>>> {
        procs::signal_and_wait(&self.proc, Sig::INT, Duration::from_secs(30))?;
        let folded = fold(&self.data);
        // Tens of MB of stack copies, and perf's (empty) log.
        let _ = std::fs::remove_file(&self.data);
        let _ = std::fs::remove_file(&self.proc.log);
        Ok(split_by_process(&folded?, &self.pids))
    }
}

/// The samples in `data`, folded in one pass with the process id in each root frame
/// (`comm-pid`, inferno's `include_pid`): one `perf script` however many processes were
/// recorded (a pass per process with `--pid` took 8.7 + 10.0 s where one took 15.0 s, for a
/// 25 MB connection profile).
fn fold(data: &Path) -> Result<Vec<String>> {
    let script = Command::new("perf")
        .arg("script")
        .arg("-i")
        .arg(data)
        // perf's default header names only the thread; the fields of its usual output with
        // `pid/tid`, which inferno reads the process from.
        .args(["-F", "comm,pid,tid,time,period,event,ip,sym,symoff,dso"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .context("run perf script")?;
    if !script.status.success() {
        bail!(
            "perf script -i {} failed ({})",
            data.display(),
            script.status
        );
    }
    let mut options = inferno::collapse::perf::Options::default();
    options.annotate_kernel = true;
    options.include_pid = true;
    options.nthreads = 1;
    let mut folded = Vec::new();
    inferno::collapse::perf::Folder::from(options)
        .collapse(&script.stdout[..], &mut folded)
        .context("fold perf samples")?;
    Ok(String::from_utf8_lossy(&folded)
        .lines()
        .map(str::to_owned)
        .collect())
}

/// Folded stacks whose root frame is `comm-pid`, one set per process of `pids` (in that
/// order), each root frame back to `comm`. Stacks of other processes are left out.
fn split_by_process(folded: &[String], pids: &[u32]) -> Vec<Vec<String>> {
    let mut sets = vec![Vec::new(); pids.len()];
    for line in folded {
        let Some((stack, count)) = line.rsplit_once(' ') else {
            continue;
        };
        let (root, frames) = match stack.split_once(';') {
            Some((root, frames)) => (root, Some(frames)),
            None => (stack, None),
        };
        let Some((comm, pid)) = root.rsplit_once('-') else {
            continue;
        };
        let Some(i) = pid
            .parse()
            .ok()
            .and_then(|pid: u32| pids.iter().position(|&p| p == pid))
        else {
            continue;
        };
        sets[i].push(match frames {
            Some(frames) => format!("{comm};{frames} {count}"),
            None => format!("{comm} {count}"),
        });
    }
    sets
}

/// The folded stacks of several processes as one set: a stack found in more than one counts
/// their samples together, once.
pub fn merge(sets: &[Vec<String>]) -> Vec<String> {
    let mut stacks: BTreeMap<&str, u64> = BTreeMap::new();
    for line in sets.iter().flatten() {
        if let Some((stack, count)) = line.rsplit_once(' ')
            && let Ok(count) = count.parse::<u64>()
        {
            *stacks.entry(stack).or_default() += count;
        }
    }
    stacks
        .into_iter()
        .map(|(stack, count)| format!("{stack} {count}"))
        .collect()
}

/// Writes the flamegraph of `folded` to `svg`. Frames lose their generic arguments (see [`short`]): the frames of one function merge, and
/// the SVG is a fraction of the size.
pub fn flamegraph(folded: &[String], title: &str, svg: &Path) -> Result<()> {
    let folded: Vec<String> = folded
        .iter()
        .filter_map(|line| {
            let (stack, count) = line.rsplit_once(' ')?;
            let frames: Vec<String> = stack.split(';').map(short).collect();
            Some(format!("{} {count}", frames.join(";")))
        })
        .collect();
    let mut options = inferno::flamegraph::Options::default();
    options.title = title.to_owned();
    options.count_name = "ns of CPU".into();
    // Frames under half a pixel (of 1200) are left out: the connection profile's SVG went from
    // 1.23 to 0.27 MB (20:33Z), with nothing visible lost.
    options.min_width = 0.5;
    let file = std::fs::File::create(svg).with_context(|| format!("create {}", svg.display()))?;
    inferno::flamegraph::from_lines(
        &mut options,
        folded.iter().map(String::as_str),
        std::io::BufWriter::new(file),
    )
    .with_context(|| format!("write {}", svg.display()))
}

/// Where the sampled CPU time went.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Summary {
    /// CPU time sampled, ns: inferno weighs each `cpu-clock` sample by its period. The other
    /// fields are in the same unit.
    pub cpu_ns: u64,
    /// Category → CPU time, e.g. `kernel: connect`, `crypto`, `user space: gembok`.
    pub categories: BTreeMap<String, u64>,
    /// Kernel time with softirq (packet processing) on its stack, whatever the call.
    pub softirq: u64,
    /// Leaf function, generic arguments elided (instances of one function merge) → CPU time
    /// (self time).
    pub leaves: BTreeMap<String, u64>,
}

/// Leaf symbols that are cryptography (aws-lc, ring, and the algorithms by name).
const CRYPTO: &[&str] = &[
    "aws_lc",
    "ring_core",
    "x25519",
    "curve25519",
    "sha256",
    "sha512",
    "sha3",
    "keccak",
    "mlkem",
    "ml_kem",
    "mlk_",
    "constant_time",
    "limbs_",
    "aes",
    "gcm",
    "ghash",
    "gfmul",
    "poly1305",
    "chacha",
    "p256",
    "nistz",
    "ecdsa",
    "ecp_",
    "bn_",
    "fiat_",
    "hmac",
    "hkdf",
];

/// C functions of the crypto libraries that keep no library prefix once inlined (aws-lc's
/// `OPENSSL_memset` zeroing a context, `CRYPTO_bswap4`, `crypto_md32_update`, `EVP_*`):
/// matched at the start of the name only, so that no Rust path is taken for one.
const CRYPTO_C: &[&str] = &["openssl_", "crypto_", "evp_", "pkey_", "kem_", "rand_bytes"];

impl Summary {
    pub fn from_folded(folded: &[String]) -> Self {
        let mut s = Summary::default();
        for line in folded {
            let Some((stack, count)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            let frames: Vec<&str> = stack.split(';').collect();
            let leaf = frames.last().copied().unwrap_or_default();
            s.cpu_ns += count;
            *s.leaves.entry(short(leaf)).or_default() += count;
            // The vDSO (clock_gettime) runs in user space, though perf names it like the kernel.
            let category = if frames.iter().any(|f| f.starts_with("__vdso")) {
                LIBC.to_owned()
            } else if leaf.ends_with("_[k]") {
                if frames.iter().any(|f| is_softirq(f)) {
                    s.softirq += count;
                }
                kernel_category(&frames)
            } else {
                user_category(leaf).to_owned()
            };
            *s.categories.entry(category).or_default() += count;
        }
        s
    }

    /// Markdown: the categories, largest first, with a column per side (`(name, that side's own
    /// summary)`, e.g. the outbound and the inbound sidecar) beside each category's share
    /// (shares of all the samples, so a row's sides add up to its total); then the `top` hottest
    /// leaf functions.
    pub fn markdown(&self, sides: &[(&str, &Summary)], top: usize) -> String {
        let pct = |n: u64| 100.0 * n as f64 / self.cpu_ns.max(1) as f64;
        let mut out = String::new();
        let kernel: u64 = self
            .categories
            .iter()
            .filter(|(k, _)| k.starts_with("kernel"))
            .map(|(_, v)| v)
            .sum();
        let _ = writeln!(
            out,
            "{:.2} s of CPU sampled; kernel {:.1} % (softirq, i.e. loopback packet delivery, \
             {:.1} %, inside whichever call sent the packet)\n",
            self.cpu_ns as f64 / 1e9,
            pct(kernel),
            pct(self.softirq)
        );
        let names: String = sides.iter().map(|(name, _)| format!(" {name} |")).collect();
        let rules = "---|".repeat(sides.len());
        let _ = writeln!(out, "| where | share |{names}\n|---|---|{rules}");
        let mut cats: Vec<_> = self.categories.iter().collect();
        cats.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (name, n) in cats {
            let per_side: String = sides
                .iter()
                .map(|(_, side)| {
                    let n = side.categories.get(name).copied().unwrap_or(0);
                    format!(" {:.1} % |", pct(n))
                })
                .collect();
            let _ = writeln!(out, "| {name} | {:.1} % |{per_side}", pct(*n));
        }
        let _ = writeln!(out, "\n| hottest functions (self) | share |\n|---|---|");
        let mut leaves: Vec<_> = self.leaves.iter().collect();
        leaves.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (name, n) in leaves.into_iter().take(top) {
            let _ = writeln!(out, "| `{name}` | {:.1} % |", pct(*n));
        }
        out
    }
}

const LIBC: &str = "user space: libc and other C (system call wrappers, clock)";

/// jemalloc's internal functions that keep no `_rjem_` prefix once inlined.
const JEMALLOC: &[&str] = &[
    "je_",
    "imalloc",
    "ifree",
    "isfree",
    "isdalloct",
    "tcache",
    "cache_bin",
    "arena_",
    "extent_",
    "emap_",
    "edata_",
    "eset_",
    "ecache_",
    "tsd_",
    "sz_",
    "pac_",
    "pa_",
    "san_",
];

/// glibc's allocator, which the C libraries (aws-lc's `OPENSSL_malloc`) use.
const GLIBC_MALLOC: &[&str] = &[
    "_int_free",
    "_int_malloc",
    "__gi___libc_free",
    "__libc_malloc",
    "cfree",
    "unlink_chunk",
];

fn is_softirq(frame: &str) -> bool {
    [
        "net_rx_action",
        "do_softirq",
        "handle_softirqs",
        "__do_softirq",
    ]
    .iter()
    .any(|s| frame.starts_with(s))
}

/// `kernel: <system call>` from the frame `do_syscall_64` called, else `kernel: no system
/// call` (interrupts, page faults, the scheduler between calls).
fn kernel_category(frames: &[&str]) -> String {
    let call = frames
        .iter()
        .position(|f| f.starts_with("do_syscall_64"))
        .and_then(|i| {
            // Newer kernels dispatch through x64_sys_call.
            let rest = &frames[i + 1..];
            rest.iter().find(|f| !f.starts_with("x64_sys_call"))
        })
        .map(|f| {
            if f.starts_with("syscall_exit") || f.starts_with("exit_to_user_mode") {
                return "return to user space (rescheduling, signals)".to_owned();
            }
            let f = f.trim_end_matches("_[k]");
            let mut name = f;
            for prefix in [
                "__x64_sys_",
                "__ia32_sys_",
                "__do_sys_",
                "__sys_",
                "ksys_",
                "do_",
            ] {
                if let Some(rest) = name.strip_prefix(prefix) {
                    name = rest;
                    break;
                }
            }
            name.split('.').next().unwrap_or(name).to_owned()
        });
    match call {
        Some(name) => format!("kernel: {name}"),
        None => "kernel: no system call".into(),
    }
}

fn user_category(leaf: &str) -> &'static str {
    let lower = leaf.to_ascii_lowercase();
    if CRYPTO.iter().any(|c| lower.contains(c)) || CRYPTO_C.iter().any(|c| lower.starts_with(c)) {
        "crypto"
    } else if ["memmove", "memcpy", "memset"]
        .iter()
        .any(|m| lower.contains(m))
    {
        "user space: memory copies"
    } else if lower.contains("_rjem_")
        || JEMALLOC.iter().any(|p| lower.starts_with(p))
        || GLIBC_MALLOC.iter().any(|p| lower.starts_with(p))
        || ["malloc", "sdallocx", "realloc", "free"]
            .iter()
            .any(|m| lower.starts_with(m) || lower.starts_with(&format!("__{m}")))
    {
        "user space: allocator"
    } else {
        match crate_of(leaf) {
            "tokio" | "mio" | "tokio_util" => "user space: tokio (scheduler, I/O driver, timers)",
            "rustls" | "tokio_rustls" | "webpki" | "rustls_webpki" => "user space: rustls",
            "gembok_proxy" | "gembok_certwatch" => "user space: gembok",
            "core" | "alloc" | "std" | "hashbrown" => "user space: Rust core and std",
            "metrics" | "metrics_util" | "metrics_exporter_prometheus" => "user space: metrics",
            "tracing" | "tracing_core" | "tracing_subscriber" => "user space: tracing",
            _ if !leaf.contains("::") => {
                "user space: libc and other C (system call wrappers, clock)"
            }
            _ => "user space: other",
        }
    }
}

/// The crate a Rust symbol belongs to: its first path segment, past any leading `<` or `&`.
fn crate_of(symbol: &str) -> &str {
    let s = symbol.trim_start_matches(['<', '&', '*', ' ']);
    match s.find("::") {
        Some(i)
            if s[..i]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_') =>
        {
            &s[..i]
        }
        _ => "",
    }
}

/// A function name without its generic arguments, at most 100 characters.
fn short(name: &str) -> String {
    let mut out = String::new();
    let mut depth = 0usize;
    for c in name.chars() {
        match c {
            '<' => {
                if depth == 0 {
                    out.push_str("<…>");
                }
                depth += 1;
            }
            '>' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out.chars().take(100).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folded(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|l| (*l).to_owned()).collect()
    }

    #[test]
    fn samples_are_attributed_to_system_calls_crypto_and_user_space() {
        // Counts are ns of CPU (cpu-clock periods); 10 ms each here, 1 s in all.
        let s = Summary::from_folded(&folded(&[
            // shutdown, with the receiver's softirq inside it
            "gembok-proxy;tokio::runtime::task::raw::poll;__GI_shutdown;entry_SYSCALL_64_after_hwframe_[k];do_syscall_64_[k];__x64_sys_shutdown_[k];__sys_shutdown_[k];do_softirq.part.0_[k];net_rx_action_[k];tcp_v4_rcv_[k] 250000000",
            // writev, the wrapper inlined away
            "gembok-proxy;__GI___writev;entry_SYSCALL_64_after_hwframe_[k];do_syscall_64_[k];do_writev_[k];tcp_sendmsg_[k] 200000000",
            // sendto through a newer kernel's dispatcher
            "gembok-proxy;__GI___sendto;entry_SYSCALL_64_after_hwframe_[k];do_syscall_64_[k];x64_sys_call_[k];__x64_sys_sendto_[k];tcp_sendmsg_[k] 50000000",
            "gembok-proxy;__GI___readv;entry_SYSCALL_64_after_hwframe_[k];do_syscall_64_[k];syscall_exit_to_user_mode_[k];exit_to_user_mode_loop_[k];schedule_[k] 10000000",
            // a timer interrupt: no system call
            "gembok-proxy;gembok_proxy::conn::carry;asm_sysvec_apic_timer_interrupt_[k];hrtimer_interrupt_[k] 50000000",
            "gembok-proxy;rustls::server::hs::handle;aws_lc_0_47_0_x25519_scalar_mult_adx 250000000",
            "gembok-proxy;<gembok_proxy::forward::Pump<T> as core::future::Future>::poll;__memmove_avx_unaligned_erms 40000000",
            "gembok-proxy;alloc::raw_vec::finish_grow;_rjem_malloc 36000000",
            "gembok-proxy;<tokio::runtime::scheduler::multi_thread::worker::Context>::run 40000000",
            "gembok-proxy;<rustls::server::hs::ExpectClientHello as rustls::common_state::State<rustls::server::ServerConnectionData>>::handle 27000000",
            "gembok-proxy;gembok_proxy::records::key::open 20000000",
            "gembok-proxy;tokio::time::Instant::now;__GI___clock_gettime 10000000",
            "gembok-proxy;aws_lc_0_47_0_mlkem768_encap;Lmlk_rej_uniform_asm_loop_start 5000000",
            "gembok-proxy;alloc::alloc::alloc;imalloc_fastpath 4000000",
            // Inlined C leaves: aws-lc zeroing an HMAC context is crypto, not a copy; jemalloc's
            // and glibc's internals are the allocator.
            "gembok-proxy;aws_lc_0_47_0_HMAC_CTX_init;OPENSSL_memset 3000000",
            "gembok-proxy;_rjem_malloc;emap_alloc_ctx_lookup 2000000",
            "gembok-proxy;aws_lc_0_47_0_OPENSSL_free;__GI___libc_free;_int_free 2000000",
            "gembok-proxy;tokio::time::Instant::now;__vdso_clock_gettime_[k];read_tsc_[k] 1000000",
        ]));
        assert_eq!(s.cpu_ns, 1_000_000_000);
        let cat = |k: &str| s.categories.get(k).copied().unwrap_or(0) / 10_000_000;
        assert_eq!(cat("kernel: shutdown"), 25);
        assert_eq!(cat("kernel: writev"), 20);
        assert_eq!(cat("kernel: sendto"), 5);
        assert_eq!(
            cat("kernel: return to user space (rescheduling, signals)"),
            1
        );
        assert_eq!(cat("kernel: no system call"), 5);
        assert_eq!(s.categories["crypto"], 258_000_000);
        assert_eq!(cat("user space: memory copies"), 4);
        assert_eq!(s.categories["user space: allocator"], 44_000_000);
        assert_eq!(cat("user space: tokio (scheduler, I/O driver, timers)"), 4);
        assert_eq!(cat("user space: rustls"), 2);
        assert_eq!(cat("user space: gembok"), 2);
        assert_eq!(s.categories[LIBC], 11_000_000);
        assert_eq!(s.softirq, 250_000_000);
        assert_eq!(
            s.leaves["aws_lc_0_47_0_x25519_scalar_mult_adx"],
            250_000_000
        );

        let md = s.markdown(&[], 3);
        assert!(
            md.starts_with("1.00 s of CPU sampled; kernel 56.0 % (softirq, i.e. loopback packet delivery, 25.0 %"),
            "{md}"
        );
        assert!(md.contains("| kernel: shutdown | 25.0 % |"), "{md}");
        // The hottest leaves, largest first (ties by name), generics elided; only `top` of them.
        let hot: Vec<&str> = md
            .lines()
            .skip_while(|l| !l.starts_with("| hottest"))
            .skip(2)
            .collect();
        assert_eq!(
            hot,
            [
                "| `aws_lc_0_47_0_x25519_scalar_mult_adx` | 25.0 % |",
                "| `tcp_sendmsg_[k]` | 25.0 % |",
                "| `tcp_v4_rcv_[k]` | 25.0 % |",
            ]
        );
    }

    #[test]
    fn stacks_are_split_by_the_process_in_their_root_frame() {
        let sets = split_by_process(
            &folded(&[
                "gembok-proxy-41;a;b 3",
                "gembok-proxy-7;a;b 2",
                "gembok-proxy-41 1",
                "perf-exec-99;x 5",
                "no-pid-here;y 1",
            ]),
            &[7, 41],
        );
        assert_eq!(
            sets,
            [
                vec!["gembok-proxy;a;b 2".to_owned()],
                vec!["gembok-proxy;a;b 3".to_owned(), "gembok-proxy 1".to_owned()],
            ]
        );
    }

    #[test]
    fn the_sides_are_merged_and_shown_beside_the_total() {
        let outbound = folded(&[
            "gembok-proxy;aws_lc_0_47_0_aes_gcm 300",
            "gembok-proxy;__GI___writev;do_syscall_64_[k];do_writev_[k];tcp_sendmsg_[k] 100",
        ]);
        let inbound = folded(&[
            "gembok-proxy;aws_lc_0_47_0_aes_gcm 200",
            "gembok-proxy;__GI___recvfrom;do_syscall_64_[k];__sys_recvfrom_[k];tcp_recvmsg_[k] 400",
        ]);
        let both = merge(&[outbound.clone(), inbound.clone()]);
        // The stack both sides have counts once, with both sides' samples.
        assert_eq!(both.len(), 3, "{both:?}");
        assert!(both.contains(&"gembok-proxy;aws_lc_0_47_0_aes_gcm 500".to_owned()));
        let (o, i) = (
            Summary::from_folded(&outbound),
            Summary::from_folded(&inbound),
        );
        let total = Summary::from_folded(&both);
        assert_eq!(total.cpu_ns, o.cpu_ns + i.cpu_ns);
        let md = total.markdown(&[("outbound", &o), ("inbound", &i)], 2);
        assert!(
            md.contains("| where | share | outbound | inbound |\n|---|---|---|---|\n"),
            "{md}"
        );
        // Shares of all the samples: a row's sides add up to its total.
        assert!(md.contains("| crypto | 50.0 % | 30.0 % | 20.0 % |"), "{md}");
        assert!(
            md.contains("| kernel: recvfrom | 40.0 % | 0.0 % | 40.0 % |"),
            "{md}"
        );
        assert!(
            md.contains("| kernel: writev | 10.0 % | 10.0 % | 0.0 % |"),
            "{md}"
        );
    }

    #[test]
    fn generic_arguments_are_elided_from_names() {
        assert_eq!(
            short("<tokio::runtime::scheduler::multi_thread::worker::Context>::run"),
            "<…>::run"
        );
        assert_eq!(short("poll_pump<tokio::net::TcpStream>"), "poll_pump<…>");
        assert_eq!(short("tcp_v4_rcv_[k]"), "tcp_v4_rcv_[k]");
    }

    #[test]
    fn instances_of_one_generic_function_count_as_one() {
        let s = Summary::from_folded(&folded(&[
            "gembok-proxy;poll_pump<tokio::net::TcpStream> 2",
            "gembok-proxy;poll_pump<gembok_proxy::records::RecordStream> 1",
        ]));
        assert_eq!(s.leaves.len(), 1, "{:?}", s.leaves);
        assert_eq!(s.leaves["poll_pump<…>"], 3);
    }

    #[test]
    fn lines_that_are_not_folded_stacks_are_skipped() {
        let s = Summary::from_folded(&folded(&["", "no-count-here", "a;b 3"]));
        assert_eq!(s.cpu_ns, 3);
        assert_eq!(s.leaves["b"], 3);
    }
}
