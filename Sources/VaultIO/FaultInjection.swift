// Test hook for crash-safety tests: `MEDVAULT_FAULT=<point>` makes the process SIGKILL itself at that
// point, exactly as a power cut or `kill -9` would stop it. Compiled only into debug and test builds:
// a release binary has no such hook, whatever its environment says.
#if DEBUG
import Foundation
#if canImport(Glibc)
import Glibc
#endif
#endif

package enum FaultInjection {
    @inline(__always)
    package static func point(_ name: String) {
        #if DEBUG
        if ProcessInfo.processInfo.environment["MEDVAULT_FAULT"] == name { kill(getpid(), SIGKILL) }
        #endif
    }
}
