"""The seccomp filter every sandbox runs under: which system calls it refuses, and why the rest stay open.

Compiled with libseccomp (pyseccomp) on the runner's side and handed to bwrap, which loads it
just before it starts the sandbox's interpreter. The filter allows by default and refuses, with
EPERM unless noted:

- starting processes: fork, vfork, clone without CLONE_THREAD (threads stay allowed, and count
  against the sandbox's pids limit), clone3 (with ENOSYS: its flags lie in memory a filter cannot
  read, and the C library falls back to clone);
- reaching other processes: ptrace, process_vm_readv/writev, pidfd_getfd, kcmp,
  process_madvise (Docker allows the first three on kernels from 4.8; here the sandbox's own
  init runs as the same user, so a process that could trace it could unhook the sandbox);
- namespaces and mounts: unshare, setns, mount, umount2, pivot_root, chroot and the new mount
  API (fsopen, fsconfig, fsmount, fspick, open_tree, move_mount, mount_setattr);
- kernel keyrings: keyctl, add_key, request_key (each sandbox also starts with an empty session
  keyring of its own);
- kernel surface a program has no use for, as Docker's default profile refuses it to a container
  without capabilities: io_uring_setup/enter/register, userfaultfd, bpf, perf_event_open,
  fanotify_init, lookup_dcookie, open_by_handle_at, quotactl(_fd), NUMA memory policy (mbind,
  set_mempolicy, get_mempolicy, set_mempolicy_home_node, move_pages, migrate_pages), kernel
  modules, kexec, reboot, swapon/swapoff, acct, setting clocks (settimeofday, clock_settime),
  sethostname, setdomainname, syslog, vhangup, iopl, ioperm, uselib, ustat, sysfs, _sysctl,
  nfsservctl;
- personality, except 0xffffffff, which only reads it (Docker also allows setting four harmless
  values; a filter that allows by default cannot say "refuse unless one of these", and nothing a
  Python program runs needs them), and socket for AF_VSOCK.

Calls of other architectures (32-bit int 0x80, x32) are killed: the filter is built for the
native one only.

Left open, unlike Docker's profile which allows only what it lists: any call a later kernel adds
(this filter refuses by name). Left open on purpose: execve (bwrap starts the interpreter with
it, and it can only replace the sandboxed process with another program inside the same
sandbox), sockets (the sandbox's network namespace has no interface but its own loopback),
mknod (without capabilities it makes only FIFOs and regular files, inside the working
directory), memfd_create, prctl and seccomp (a process can only add filters, never remove
them), clock_adjtime and adjtimex (reading the clock; changing it needs a capability).
"""

from __future__ import annotations

import errno
import functools
import tempfile

CLONE_THREAD = 0x00010000
AF_VSOCK = 40
PERSONALITY_QUERY = 0xFFFFFFFF  # reads the personality, changes nothing

REFUSED = {
    "starting processes": ("fork", "vfork"),
    "reaching other processes": ("ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp",
                                 "process_madvise"),
    "namespaces and mounts": ("unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "fsopen", "fsconfig",
                              "fsmount", "fspick", "open_tree", "move_mount", "mount_setattr"),
    "kernel keyrings": ("keyctl", "add_key", "request_key"),
    "kernel surface": (
        "io_uring_setup", "io_uring_enter", "io_uring_register", "userfaultfd", "bpf", "perf_event_open",
        "fanotify_init", "lookup_dcookie", "open_by_handle_at", "quotactl", "quotactl_fd",
        "mbind", "set_mempolicy", "get_mempolicy", "set_mempolicy_home_node", "move_pages", "migrate_pages",
        "init_module", "finit_module", "delete_module", "create_module", "query_module", "get_kernel_syms",
        "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff", "acct", "settimeofday", "clock_settime",
        "sethostname", "setdomainname", "syslog", "vhangup", "iopl", "ioperm", "uselib", "ustat", "sysfs",
        "_sysctl", "nfsservctl",
    ),
}


class FilterUnavailable(RuntimeError):
    """libseccomp or its Python binding is missing; the message says how to install them."""


def refused_calls() -> list[str]:
    """Every call refused by name (clone, clone3, personality and socket are refused by their arguments)."""
    return [call for calls in REFUSED.values() for call in calls]


@functools.lru_cache(maxsize=1)
def compiled_filter() -> bytes:
    """The filter as BPF, ready for bwrap's --seccomp."""
    try:
        import pyseccomp as seccomp
    except (ImportError, OSError) as error:  # OSError: no libseccomp on the system
        raise FilterUnavailable(f"its seccomp filter cannot be built ({error}); pip install pyseccomp and "
                                "apt-get install libseccomp2") from None

    refuse = seccomp.ERRNO(errno.EPERM)
    bpf = seccomp.SyscallFilter(defaction=seccomp.ALLOW)  # other architectures' calls are killed
    for call in refused_calls():
        if seccomp.resolve_syscall(seccomp.Arch.NATIVE, call) >= 0:  # some exist only on other architectures
            bpf.add_rule(refuse, call)
    bpf.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    bpf.add_rule(refuse, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_THREAD, 0))
    bpf.add_rule(refuse, "socket", seccomp.Arg(0, seccomp.EQ, AF_VSOCK))
    bpf.add_rule(refuse, "personality", seccomp.Arg(0, seccomp.NE, PERSONALITY_QUERY))
    with tempfile.TemporaryFile() as file:
        bpf.export_bpf(file)
        file.seek(0)
        return file.read()
