//! The system calls neither Gembok server ever makes, refused by seccomp filters: the second half
//! of `--sandbox` (after Landlock, see [`crate::sandbox`]). A deny list, not an allow list: a
//! call the servers need that an allow list forgot would kill a sidecar in production on some
//! kernel or libc; every call refused here is one the servers do not make, refused with an error
//! (EPERM), never a signal. What is refused:
//! - running a program (`execve`, `execveat`): with Landlock's no-execute this also covers a
//!   program written to a memfd, which Landlock's path rules cannot see;
//! - reaching into another process (`ptrace`, `process_vm_readv`/`writev`, `pidfd_getfd`);
//! - new namespaces (`unshare`, `setns`, `clone` with a namespace flag): an unprivileged user
//!   namespace is how most kernel exploits get the capabilities the container took away;
//! - kernel interfaces with a record of privilege escalations that the servers never use: `bpf`,
//!   `perf_event_open`, `userfaultfd`, io_uring (whose operations also bypass seccomp), the
//!   kernel keyrings;
//! - mounts, kernel modules and kexec (refused anyway without capabilities; refused here too
//!   where someone runs the server privileged).
//!
//! `clone3` passes its flags in memory, where a filter cannot read them, so it gets ENOSYS:
//! glibc then creates threads with `clone`, whose flags are checked. On x86-64 the x32 system
//! call numbers (bit 30), which would reach the same calls by other numbers, get ENOSYS too; the
//! 32-bit `int 0x80` entry kills the process (seccompiler's architecture check). Where the
//! kernel allows it the filters cover every thread of the process (TSYNC), the allocator's
//! purge thread started before them included.
//!
//! Cost: the kernel caches the verdict of a filter that looks only at the call's number (every
//! call here but `clone`), so the data path's calls pass without running a filter.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};

/// The system calls refused with EPERM, whatever their arguments.
const REFUSED: &[(&str, i64)] = &[
    ("execve", libc::SYS_execve),
    ("execveat", libc::SYS_execveat),
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
    ("unshare", libc::SYS_unshare),
    ("setns", libc::SYS_setns),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("chroot", libc::SYS_chroot),
    ("open_tree", libc::SYS_open_tree),
    ("move_mount", libc::SYS_move_mount),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
];

/// `clone` flags that make a new namespace (`CLONE_NEWTIME` shares its bit with the exit signal
/// in `clone`'s flags, and is reachable only through `clone3` and `unshare`, both refused).
const NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
];

/// x86-64's x32 ABI marks its system call numbers with this bit.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// What a log line says is refused.
pub const SUMMARY: &str = "running programs, tracing or reading other processes, new namespaces, bpf, perf events, userfaultfd, io_uring, kernel keyrings, mounts, kernel modules, kexec";

/// Why the filters could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("no seccomp filter for this architecture ({0})")]
    Architecture(&'static str),
    #[error("cannot build the seccomp filter: {0}")]
    Build(String),
    #[error("the kernel refused the seccomp filter: {0}")]
    Install(String),
}

/// Where the filters hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Installed {
    /// Every thread of the process (TSYNC), else this thread and those it starts from now on.
    pub all_threads: bool,
}

/// The filters for this architecture, in the order they are installed.
pub fn programs() -> Result<Vec<BpfProgram>, SeccompError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|_| SeccompError::Architecture(std::env::consts::ARCH))?;
    let mut refused: BTreeMap<i64, Vec<SeccompRule>> =
        REFUSED.iter().map(|&(_, nr)| (nr, Vec::new())).collect();
    let new_namespace = |flag: u64| {
        let cond = SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(flag),
            flag,
        );
        SeccompRule::new(vec![cond.map_err(build)?]).map_err(build)
    };
    refused.insert(
        libc::SYS_clone,
        NAMESPACE_FLAGS
            .iter()
            .map(|&f| new_namespace(f))
            .collect::<Result<_, _>>()?,
    );
    let eperm = filter(refused, libc::EPERM, arch)?;
    let clone3 = filter(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        libc::ENOSYS,
        arch,
    )?;
    let mut programs = vec![eperm, clone3];
    if arch == TargetArch::x86_64 {
        programs.push(no_x32());
    }
    Ok(programs)
}

fn filter(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    errno: i32,
    arch: TargetArch,
) -> Result<BpfProgram, SeccompError> {
    let errno = SeccompAction::Errno(errno as u32);
    let filter = SeccompFilter::new(rules, SeccompAction::Allow, errno, arch).map_err(build)?;
    BpfProgram::try_from(filter).map_err(build)
}

fn refused(e: seccompiler::Error) -> SeccompError {
    SeccompError::Install(e.to_string())
}

fn build(e: impl std::fmt::Display) -> SeccompError {
    SeccompError::Build(e.to_string())
}

/// ENOSYS for every x32 system call (x86-64 only; other architectures pass to the next filter).
fn no_x32() -> BpfProgram {
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const JSET_K: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const NR: u32 = 0; // offsetof(struct seccomp_data, nr)
    const ARCH: u32 = 4; // offsetof(struct seccomp_data, arch)
    const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
    let op = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    vec![
        op(LD_W_ABS, 0, 0, ARCH),
        op(JEQ_K, 0, 3, AUDIT_ARCH_X86_64), // another architecture: allow (the others decide)
        op(LD_W_ABS, 0, 0, NR),
        op(JSET_K, 0, 1, X32_SYSCALL_BIT),
        op(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        op(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ]
}

/// Installs the filters on every thread where the kernel can, else on this one (and the threads
/// it starts). Nothing is installed unless every filter builds; a kernel that took one filter
/// and refused the next would leave the first in place (the caller reports the error).
pub fn install() -> Result<Installed, SeccompError> {
    let programs = programs()?;
    let mut all_threads = true;
    for program in &programs {
        if all_threads && seccompiler::apply_filter_all_threads(program).is_ok() {
            continue;
        }
        all_threads = false;
        seccompiler::apply_filter(program).map_err(refused)?;
    }
    Ok(Installed { all_threads })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Installs the filters on this thread alone (and the threads it starts), leaving the rest
    /// of the test process free.
    fn install_on_this_thread() -> Result<(), SeccompError> {
        for program in &programs()? {
            seccompiler::apply_filter(program).map_err(refused)?;
        }
        Ok(())
    }

    /// `Seccomp_filters` of this thread, from /proc (Linux 5.9 and later).
    fn filters_here() -> Option<usize> {
        let status = std::fs::read_to_string("/proc/thread-self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("Seccomp_filters:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    #[test]
    fn every_refused_call_is_in_the_first_filter_and_the_x32_filter_matches_only_x32() {
        let programs = programs().unwrap();
        assert_eq!(
            programs.len(),
            if cfg!(target_arch = "x86_64") { 3 } else { 2 }
        );
        // seccompiler compiles each refused number into a comparison against it.
        for &(name, nr) in REFUSED {
            assert!(
                programs[0].iter().any(|op| op.k == nr as u32),
                "{name} missing from the filter"
            );
        }
        // `clone` is refused only with a namespace flag: one masked comparison per flag.
        assert!(programs[0].iter().any(|op| op.k == libc::SYS_clone as u32));
        for &flag in NAMESPACE_FLAGS {
            assert!(
                programs[0].iter().any(|op| op.k == flag as u32),
                "{flag:#x}"
            );
        }
        if cfg!(target_arch = "x86_64") {
            let x32 = &programs[2];
            assert_eq!(x32[3].k, X32_SYSCALL_BIT);
            assert_eq!(x32[4].k, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32);
        }
    }

    /// On a thread of its own (the rest of the test process stays free): a program cannot be
    /// run, yet threads are still created (glibc falls back from `clone3` to `clone`, whose
    /// flags the filter reads), and the kernel reports the filters on the thread.
    #[test]
    fn a_filtered_thread_cannot_run_a_program_but_can_start_threads() {
        std::thread::spawn(|| {
            let before = filters_here();
            if let Err(e) = install_on_this_thread() {
                return eprintln!("SKIP: seccomp refused here: {e}");
            }
            let ran = std::process::Command::new("/bin/true").status();
            let err = ran.expect_err("execve is refused");
            assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
            let answer = std::thread::spawn(|| 6 * 7).join().expect("a new thread");
            assert_eq!(answer, 42);
            if let (Some(before), Some(after)) = (before, filters_here()) {
                assert_eq!(after, before + programs().unwrap().len());
            }
        })
        .join()
        .unwrap();
    }
}
