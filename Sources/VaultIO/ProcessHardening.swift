import CSysShim
#if canImport(Glibc)
import Glibc
#endif

/// Process-level protections for code that holds keys.
public enum ProcessHardening {
    /// No core dumps (and no ptrace by other same-user processes): called before any key is loaded.
    /// Idempotent; failure is ignored because it only removes a defence in depth.
    public static func disableCoreDumps() {
        _ = mv_sys_disable_core_dumps()
    }

    /// Signals on which the Swift runtime's crash handler runs (swift/docs/Backtracing.rst).
    static let crashSignals: [Int32] = [SIGQUIT, SIGABRT, SIGBUS, SIGFPE, SIGILL, SIGSEGV, SIGTRAP, SIGSYS]

    /// Turns off the Swift runtime's crash handler. On Linux it is on by default: on a crash it runs
    /// swift-backtrace, which prints the registers and the memory they point to on stderr, where keys
    /// or patient data could end up in a log. The runtime installs its signal handlers while it loads,
    /// before `main`, reading only the environment variable SWIFT_BACKTRACE; so this puts the default
    /// action back on each of those signals (the process then dies with the signal and, being
    /// non-dumpable, leaves no core file), and sets SWIFT_BACKTRACE=enable=no for any child process.
    /// Whatever SWIFT_BACKTRACE the caller set is overridden. docs/threat-model.md, "Crashes".
    public static func disableCrashBacktraces() {
        for sig in crashSignals { _ = signal(sig, SIG_DFL) }
        _ = setenv("SWIFT_BACKTRACE", "enable=no", 1)
    }
}
