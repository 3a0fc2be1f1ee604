// The only layer that calls libsodium. Everything else sees Swift types and typed errors.
import CSodium

/// Errors from the cryptographic layer. Authentication failures say nothing about *why*:
/// a wrong key, a flipped bit and a swapped blob look the same to an attacker.
public enum CryptoError: Error, Equatable, Sendable, CustomStringConvertible {
    /// libsodium could not be initialised (no entropy source).
    case initializationFailed
    /// secure memory could not be allocated or locked.
    case secureMemoryUnavailable
    /// an authenticated decryption failed: wrong key, or the bytes were altered.
    case authenticationFailed
    /// an encrypted stream ended before its final chunk.
    case truncated
    /// bytes followed the final chunk of an encrypted stream.
    case trailingData
    /// an input had the wrong length or shape for the operation.
    case malformedInput(String)
    /// the passphrase key derivation could not run (usually: not enough memory for its parameters).
    case keyDerivationFailed

    public var description: String {
        switch self {
        case .initializationFailed: "libsodium could not be initialised"
        case .secureMemoryUnavailable: "secure memory could not be allocated"
        case .authenticationFailed: "authentication failed: wrong key or altered data"
        case .truncated: "encrypted data is truncated"
        case .trailingData: "unexpected data after the end of the encrypted stream"
        case .malformedInput(let what): "malformed input: \(what)"
        case .keyDerivationFailed: "passphrase key derivation failed (not enough memory for its parameters?)"
        }
    }
}

/// One-time library initialisation. `sodium_init` is itself idempotent and thread-safe.
enum Sodium {
    static let ready: Bool = sodium_init() >= 0

    static func ensure() throws(CryptoError) {
        guard ready else { throw .initializationFailed }
    }
}

/// Cryptographically secure random bytes (libsodium's `randombytes_buf`, backed by getrandom).
public func secureRandomBytes(_ count: Int) -> [UInt8] {
    precondition(Sodium.ready, "libsodium failed to initialise")
    var out = [UInt8](repeating: 0, count: count)
    out.withUnsafeMutableBytes { randombytes_buf($0.baseAddress!, count) }
    return out
}

/// Compares two byte strings in constant time (for equal lengths).
public func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    if a.isEmpty { return true }
    return a.withUnsafeBytes { pa in b.withUnsafeBytes { pb in
        sodium_memcmp(pa.baseAddress!, pb.baseAddress!, a.count) == 0
    } }
}

/// Overwrites a Swift array's bytes with zeros (best effort: copies Swift made earlier are out of reach,
/// which is why long-lived secrets live in `SecureBytes` instead).
public func wipe(_ bytes: inout [UInt8]) {
    let n = bytes.count
    guard n > 0 else { return }
    bytes.withUnsafeMutableBytes { sodium_memzero($0.baseAddress!, n) }
}
