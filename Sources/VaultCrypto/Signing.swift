import CSodium

/// An Ed25519 public key (libsodium `crypto_sign_ed25519`): 32 bytes, safe to publish.
/// It checks the vault's backup manifests without any other key.
public struct Ed25519PublicKey: Sendable, Equatable, CustomStringConvertible {
    public static let byteCount = Int(crypto_sign_publickeybytes())
    public static let signatureByteCount = Int(crypto_sign_bytes())
    public let bytes: [UInt8]

    public init?(bytes: [UInt8]) {
        guard bytes.count == Self.byteCount else { return nil }
        self.bytes = bytes
    }

    /// Parses standard base64 (as stored in vault.json); nil if it is not 32 bytes.
    public init?(base64: String) {
        guard let b = decodeBase64(base64.trimmingSpaces()) else { return nil }
        self.init(bytes: b)
    }

    public var base64: String { encodeBase64(bytes) }
    public var description: String { "Ed25519PublicKey(\(base64))" }

    /// Whether `signature` is this key's signature of exactly `message`.
    public func isValidSignature(_ signature: [UInt8], for message: [UInt8]) -> Bool {
        guard Sodium.ready, signature.count == Self.signatureByteCount else { return false }
        return signature.withUnsafeBufferPointer { s in
            message.withUnsafeBufferPointer { m in
                bytes.withUnsafeBufferPointer { k in
                    crypto_sign_verify_detached(s.baseAddress!, m.baseAddress, UInt64(m.count), k.baseAddress!) == 0
                }
            }
        }
    }
}

/// An Ed25519 signing key in secure memory, made from a 32-byte seed (RFC 8032's "secret key").
/// The seed is a `SymmetricKey` so that it can be wrapped and unwrapped like any other key.
public struct Ed25519SigningKey: Sendable, CustomStringConvertible {
    /// libsodium's expanded secret key: seed ‖ public key (64 bytes).
    private let secret: SecureBytes
    public let publicKey: Ed25519PublicKey

    public init(seed: SymmetricKey) throws(CryptoError) {
        try Sodium.ensure()
        var pk = [UInt8](repeating: 0, count: Ed25519PublicKey.byteCount)
        do {
            secret = try SecureBytes(count: Int(crypto_sign_secretkeybytes())) { sk in
                let rc = seed.withUnsafeBytes { s in
                    crypto_sign_seed_keypair(&pk, sk.baseAddress!.assumingMemoryBound(to: UInt8.self), s.baseAddress!.assumingMemoryBound(to: UInt8.self))
                }
                if rc != 0 { throw CryptoError.keyDerivationFailed }
            }
        } catch let e as CryptoError { throw e } catch { throw .secureMemoryUnavailable }
        guard let key = Ed25519PublicKey(bytes: pk) else { throw .malformedInput("public key length") }
        publicKey = key
    }

    /// A detached 64-byte signature of `message`.
    public func sign(_ message: [UInt8]) -> [UInt8] {
        var sig = [UInt8](repeating: 0, count: Ed25519PublicKey.signatureByteCount)
        secret.withUnsafeBytes { sk in
            message.withUnsafeBufferPointer { m in
                _ = crypto_sign_detached(&sig, nil, m.baseAddress, UInt64(m.count), sk.baseAddress!.assumingMemoryBound(to: UInt8.self))
            }
        }
        return sig
    }

    public var description: String { "Ed25519SigningKey(redacted, public \(publicKey.base64))" }
}

// Base64 without Foundation (VaultCrypto stays Foundation-free), through libsodium.
func encodeBase64(_ bytes: [UInt8]) -> String {
    let variant = Int32(sodium_base64_VARIANT_ORIGINAL)
    let n = sodium_base64_encoded_len(bytes.count, variant)
    var out = [CChar](repeating: 0, count: n)
    bytes.withUnsafeBufferPointer { b in _ = sodium_bin2base64(&out, n, b.baseAddress, b.count, variant) }
    let end = out.firstIndex(of: 0) ?? out.count
    return String(decoding: out[..<end].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

func decodeBase64(_ text: String) -> [UInt8]? {
    let chars = Array(text.utf8)
    var out = [UInt8](repeating: 0, count: chars.count / 4 * 3 + 3)
    var len = 0
    let rc = chars.withUnsafeBufferPointer { c in
        c.withMemoryRebound(to: CChar.self) { cc in
            sodium_base642bin(&out, out.count, cc.baseAddress, cc.count, nil, &len, nil, Int32(sodium_base64_VARIANT_ORIGINAL))
        }
    }
    guard rc == 0 else { return nil }
    return Array(out[0..<len])
}

extension String {
    fileprivate func trimmingSpaces() -> String {
        var s = Substring(self)
        while let c = s.first, c == " " || c == "\n" || c == "\r" || c == "\t" { s.removeFirst() }
        while let c = s.last, c == " " || c == "\n" || c == "\r" || c == "\t" { s.removeLast() }
        return String(s)
    }
}
