import CSodium

/// Small authenticated encryption: XChaCha20-Poly1305-IETF with a random 24-byte nonce.
/// Output layout: nonce (24) ‖ ciphertext ‖ tag (16). Used for key wrapping and catalog sealing;
/// files use `StreamEncryptor` instead.
public enum AEAD {
    public static let nonceByteCount = Int(crypto_aead_xchacha20poly1305_ietf_npubbytes())
    public static let tagByteCount = Int(crypto_aead_xchacha20poly1305_ietf_abytes())
    /// Bytes added to a plaintext by `seal`.
    public static var overhead: Int { nonceByteCount + tagByteCount }

    public static func seal(_ plaintext: UnsafeRawBufferPointer, key: SymmetricKey, associatedData: [UInt8]) -> [UInt8] {
        precondition(Sodium.ready)
        var out = [UInt8](repeating: 0, count: overhead + plaintext.count)
        out.withUnsafeMutableBufferPointer { o in
            let nonce = o.baseAddress!
            randombytes_buf(nonce, nonceByteCount)
            var written: UInt64 = 0
            key.withUnsafeBytes { k in
                associatedData.withUnsafeBufferPointer { ad in
                    _ = crypto_aead_xchacha20poly1305_ietf_encrypt(
                        nonce + nonceByteCount, &written,
                        plaintext.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt64(plaintext.count),
                        ad.baseAddress, UInt64(ad.count), nil, nonce,
                        k.baseAddress!.assumingMemoryBound(to: UInt8.self))
                }
            }
        }
        return out
    }

    public static func seal(_ plaintext: [UInt8], key: SymmetricKey, associatedData: [UInt8]) -> [UInt8] {
        plaintext.withUnsafeBytes { seal($0, key: key, associatedData: associatedData) }
    }

    /// Opens a box into ordinary memory (for catalog records, which are not keys).
    public static func open(_ box: [UInt8], key: SymmetricKey, associatedData: [UInt8]) throws(CryptoError) -> [UInt8] {
        guard box.count >= overhead else { throw .malformedInput("sealed box too short") }
        var out = [UInt8](repeating: 0, count: box.count - overhead)
        let ok = open(box, key: key, associatedData: associatedData, into: &out)
        guard ok else { throw .authenticationFailed }
        return out
    }

    private static func open(_ box: [UInt8], key: SymmetricKey, associatedData: [UInt8], into out: inout [UInt8]) -> Bool {
        let clearCount = out.count
        return out.withUnsafeMutableBufferPointer { o in
            openRaw(box, key: key, associatedData: associatedData, into: UnsafeMutableRawBufferPointer(
                start: o.baseAddress, count: clearCount))
        }
    }

    static func openRaw(
        _ box: [UInt8], key: SymmetricKey, associatedData: [UInt8], into out: UnsafeMutableRawBufferPointer
    ) -> Bool {
        guard box.count == overhead + out.count else { return false }
        var written: UInt64 = 0
        let rc = box.withUnsafeBufferPointer { b in
            key.withUnsafeBytes { k in
                associatedData.withUnsafeBufferPointer { ad in
                    crypto_aead_xchacha20poly1305_ietf_decrypt(
                        out.baseAddress?.assumingMemoryBound(to: UInt8.self), &written, nil,
                        b.baseAddress! + nonceByteCount, UInt64(b.count - nonceByteCount),
                        ad.baseAddress, UInt64(ad.count), b.baseAddress!,
                        k.baseAddress!.assumingMemoryBound(to: UInt8.self))
                }
            }
        }
        return rc == 0
    }
}

/// Wrapping one key with another: the wrapped form is an `AEAD` box of the 32 key bytes.
public enum KeyWrap {
    public static var wrappedByteCount: Int { AEAD.overhead + SymmetricKey.byteCount }

    public static func wrap(_ key: SymmetricKey, with kek: SymmetricKey, associatedData: [UInt8]) -> [UInt8] {
        key.withUnsafeBytes { AEAD.seal($0, key: kek, associatedData: associatedData) }
    }

    /// Unwraps straight into secure memory; the key never sits in an ordinary array.
    public static func unwrap(
        _ wrapped: [UInt8], with kek: SymmetricKey, associatedData: [UInt8]
    ) throws(CryptoError) -> SymmetricKey {
        guard wrapped.count == wrappedByteCount else { throw .malformedInput("wrapped key length") }
        do {
            let storage = try SecureBytes(count: SymmetricKey.byteCount) { out in
                guard AEAD.openRaw(wrapped, key: kek, associatedData: associatedData, into: out) else {
                    throw CryptoError.authenticationFailed
                }
            }
            return SymmetricKey(storage: storage)
        } catch let e as CryptoError { throw e } catch { throw .secureMemoryUnavailable }
    }
}

/// XChaCha20-Poly1305-IETF with a nonce the caller chooses, on caller-owned buffers: for formats that
/// seal many pieces under one key and derive each piece's nonce from its position (blob format 2,
/// `docs/file-format.md` §5a), so that any piece can be opened on its own. Output layout: ciphertext
/// (as long as the plaintext) ‖ tag (16). The caller MUST NOT use one nonce twice with one key.
public enum NoncedAEAD {
    public static var nonceByteCount: Int { AEAD.nonceByteCount }
    public static var tagByteCount: Int { AEAD.tagByteCount }

    /// Seals `plaintext` into `output` (at least `plaintext.count + tagByteCount` bytes; must not
    /// overlap the input). Returns the bytes written.
    @discardableResult
    public static func seal(
        _ plaintext: UnsafeRawBufferPointer, nonce: UnsafeRawBufferPointer, key: SymmetricKey,
        associatedData: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer
    ) -> Int {
        precondition(Sodium.ready)
        precondition(nonce.count == nonceByteCount)
        precondition(output.count >= plaintext.count + tagByteCount)
        var written: UInt64 = 0
        key.withUnsafeBytes { k in
            _ = crypto_aead_xchacha20poly1305_ietf_encrypt(
                output.baseAddress!.assumingMemoryBound(to: UInt8.self), &written,
                plaintext.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt64(plaintext.count),
                associatedData.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt64(associatedData.count), nil,
                nonce.baseAddress!.assumingMemoryBound(to: UInt8.self), k.baseAddress!.assumingMemoryBound(to: UInt8.self))
        }
        return Int(written)
    }

    /// Opens `sealed` (ciphertext ‖ tag) into `output` (at least `sealed.count - tagByteCount` bytes).
    /// Returns the plaintext length. Nothing usable is left in `output` when authentication fails.
    public static func open(
        _ sealed: UnsafeRawBufferPointer, nonce: UnsafeRawBufferPointer, key: SymmetricKey,
        associatedData: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer
    ) throws(CryptoError) -> Int {
        precondition(Sodium.ready)
        guard nonce.count == nonceByteCount else { throw .malformedInput("nonce length") }
        guard sealed.count >= tagByteCount, let input = sealed.baseAddress else { throw .authenticationFailed }
        precondition(output.count >= sealed.count - tagByteCount)
        var written: UInt64 = 0
        let rc = key.withUnsafeBytes { k in
            crypto_aead_xchacha20poly1305_ietf_decrypt(
                output.baseAddress?.assumingMemoryBound(to: UInt8.self), &written, nil,
                input.assumingMemoryBound(to: UInt8.self), UInt64(sealed.count),
                associatedData.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt64(associatedData.count),
                nonce.baseAddress!.assumingMemoryBound(to: UInt8.self), k.baseAddress!.assumingMemoryBound(to: UInt8.self))
        }
        guard rc == 0 else { throw .authenticationFailed }
        return Int(written)
    }
}
