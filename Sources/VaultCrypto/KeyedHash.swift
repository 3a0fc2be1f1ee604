import CSodium

/// Streaming BLAKE2b-256 (libsodium `crypto_generichash`). Unkeyed: ciphertext hashes that anyone may
/// recompute (backup manifests). `KeyedHasher` is the keyed form.
public class BLAKE2bHasher {
    public static let outputByteCount = 32
    // crypto_generichash_state is 64-byte aligned and does not import: raw aligned storage instead.
    private let state: UnsafeMutableRawPointer
    private let stateSize: Int
    private var finished = false

    public convenience init() { self.init(keyedBy: nil) }

    init(keyedBy key: SymmetricKey?) {
        precondition(Sodium.ready)
        stateSize = crypto_generichash_statebytes()
        let state = UnsafeMutableRawPointer.allocate(byteCount: stateSize, alignment: 64)
        self.state = state
        if let key {
            key.withUnsafeBytes { k in
                _ = crypto_generichash_init(OpaquePointer(state), k.baseAddress?.assumingMemoryBound(to: UInt8.self), k.count, Self.outputByteCount)
            }
        } else {
            _ = crypto_generichash_init(OpaquePointer(state), nil, 0, Self.outputByteCount)
        }
    }

    deinit {
        sodium_memzero(state, stateSize)  // a keyed state has absorbed the key
        state.deallocate()
    }

    public func update(_ bytes: UnsafeRawBufferPointer) {
        precondition(!finished)
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        _ = crypto_generichash_update(OpaquePointer(state), base.assumingMemoryBound(to: UInt8.self), UInt64(bytes.count))
    }

    public func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { update($0) } }

    public func finalize() -> [UInt8] {
        precondition(!finished)
        finished = true
        var out = [UInt8](repeating: 0, count: Self.outputByteCount)
        _ = crypto_generichash_final(OpaquePointer(state), &out, Self.outputByteCount)
        return out
    }
}

/// Keyed BLAKE2b: blind indexes and content fingerprints. A keyed hash of a patient ID reveals nothing
/// without the key, yet equal inputs give equal outputs, which is what an index needs.
public final class KeyedHasher: BLAKE2bHasher {
    public init(key: SymmetricKey) {
        super.init(keyedBy: key)
    }

    /// One-shot keyed hash.
    public static func hash(_ bytes: [UInt8], key: SymmetricKey) -> [UInt8] {
        let h = KeyedHasher(key: key)
        h.update(bytes)
        return h.finalize()
    }
}

/// Plain (unkeyed) BLAKE2b-256, for ciphertext hashes that anyone may recompute.
public func blake2b256(_ bytes: UnsafeRawBufferPointer) -> [UInt8] {
    precondition(Sodium.ready)
    var out = [UInt8](repeating: 0, count: 32)
    _ = crypto_generichash(&out, 32, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt64(bytes.count), nil, 0)
    return out
}
