import CSysShim

/// Process-level protections for code that holds keys.
public enum ProcessHardening {
    /// No core dumps (and no ptrace by other same-user processes): called before any key is loaded.
    /// Idempotent; failure is ignored because it only removes a defence in depth.
    public static func disableCoreDumps() {
        _ = mv_sys_disable_core_dumps()
    }
}
