import CSodium

/// Secret bytes in libsodium secure memory: guarded pages, `mlock`ed (never swapped), read-only
/// once filled, zeroed and freed in `deinit`. Never printed: `description` is redacted.
///
/// The storage is immutable after initialisation, so sharing across tasks is safe.
public final class SecureBytes: @unchecked Sendable, CustomStringConvertible {
    private let pointer: UnsafeMutableRawPointer
    public let count: Int

    /// Allocates `count` bytes and lets `fill` write them; the memory becomes read-only afterwards.
    public init(count: Int, fill: (UnsafeMutableRawBufferPointer) throws -> Void) throws {
        try Sodium.ensure()
        guard count > 0, let p = sodium_malloc(count) else { throw CryptoError.secureMemoryUnavailable }
        // Fill before the stored properties are set: a throw then never reaches deinit (no double free).
        do {
            try fill(UnsafeMutableRawBufferPointer(start: p, count: count))
        } catch {
            sodium_memzero(p, count)
            sodium_free(p)
            throw error
        }
        _ = sodium_mprotect_readonly(p)
        pointer = p
        self.count = count
    }

    /// Fresh random secret bytes.
    public convenience init(randomCount count: Int) throws {
        try self.init(count: count) { randombytes_buf($0.baseAddress!, count) }
    }

    /// Copies `bytes` into secure memory and wipes the caller's array. The copy is made straight from
    /// the caller's storage, so no intermediate array escapes the wipe.
    public init(consuming bytes: inout [UInt8]) throws {
        defer { wipe(&bytes) }
        try Sodium.ensure()
        let n = max(bytes.count, 1)
        guard let p = sodium_malloc(n) else { throw CryptoError.secureMemoryUnavailable }
        if bytes.isEmpty {
            p.storeBytes(of: 0, as: UInt8.self)
        } else {
            bytes.withUnsafeBytes { p.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        }
        _ = sodium_mprotect_readonly(p)
        pointer = p
        count = n
    }

    deinit {
        _ = sodium_mprotect_readwrite(pointer)
        sodium_memzero(pointer, count)
        sodium_free(pointer)
    }

    /// Read access to the secret. Do not let the pointer escape.
    public func withUnsafeBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try body(UnsafeRawBufferPointer(start: pointer, count: count))
    }

    /// Constant-time comparison.
    public func equals(_ other: SecureBytes) -> Bool {
        count == other.count && sodium_memcmp(pointer, other.pointer, count) == 0
    }

    public var description: String { "SecureBytes(\(count) bytes, redacted)" }
}

/// A 256-bit symmetric key in secure memory.
public struct SymmetricKey: Sendable, CustomStringConvertible {
    public static let byteCount = 32
    let storage: SecureBytes

    /// A fresh random key.
    public static func random() throws(CryptoError) -> SymmetricKey {
        do { return SymmetricKey(storage: try SecureBytes(randomCount: byteCount)) } catch {
            throw .secureMemoryUnavailable
        }
    }

    init(storage: SecureBytes) {
        precondition(storage.count == Self.byteCount)
        self.storage = storage
    }

    /// Imports raw key bytes (e.g. a recovery key typed by a person); the caller's array is wiped.
    public init(consuming bytes: inout [UInt8]) throws(CryptoError) {
        guard bytes.count == Self.byteCount else {
            wipe(&bytes)
            throw .malformedInput("a key is \(Self.byteCount) bytes")
        }
        do { storage = try SecureBytes(consuming: &bytes) } catch { throw .secureMemoryUnavailable }
    }

    func withUnsafeBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try storage.withUnsafeBytes(body)
    }

    /// Copies the key out, for display of a recovery key only. The caller must `wipe` the result.
    public func exportBytesForDisplay() -> [UInt8] {
        storage.withUnsafeBytes { Array($0) }
    }

    /// Derives an independent sub-key (libsodium `crypto_kdf`, BLAKE2b). `context` is exactly 8 ASCII bytes.
    public func deriveSubkey(id: UInt64, context: StaticString) throws(CryptoError) -> SymmetricKey {
        precondition(context.utf8CodeUnitCount == 8, "crypto_kdf contexts are 8 bytes")
        do {
            let sub = try SecureBytes(count: Self.byteCount) { out in
                let rc = withUnsafeBytes { master in
                    context.withUTF8Buffer { ctx in
                        ctx.withMemoryRebound(to: CChar.self) { cctx in
                            crypto_kdf_derive_from_key(
                                out.baseAddress!.assumingMemoryBound(to: UInt8.self), Self.byteCount, id,
                                cctx.baseAddress!, master.baseAddress!.assumingMemoryBound(to: UInt8.self))
                        }
                    }
                }
                if rc != 0 { throw CryptoError.keyDerivationFailed }
            }
            return SymmetricKey(storage: sub)
        } catch let e as CryptoError { throw e } catch { throw .secureMemoryUnavailable }
    }

    public var description: String { "SymmetricKey(redacted)" }
}
