// Sealing a key to an X25519 public key, with associated data. Used for key slots: the master key is
// sealed to each slot's public key, so `key rotate` can give every slot the new master key without
// knowing any slot's passphrase, and a removed slot's secret opens nothing sealed after its removal.
import CSodium

/// An X25519 key pair whose secret half lives in secure memory.
public struct SealingKeyPair: Sendable {
    public static let publicKeyByteCount = Int(crypto_scalarmult_curve25519_bytes())
    public let secretKey: SymmetricKey
    public let publicKey: [UInt8]

    /// A fresh key pair.
    public static func random() throws(CryptoError) -> SealingKeyPair {
        try SealingKeyPair(secretKey: SymmetricKey.random())
    }

    /// The key pair of a stored secret key (its public half is recomputed, never trusted from disk).
    public init(secretKey: SymmetricKey) throws(CryptoError) {
        var pk = [UInt8](repeating: 0, count: Self.publicKeyByteCount)
        let rc = secretKey.withUnsafeBytes { sk in
            pk.withUnsafeMutableBytes { crypto_scalarmult_curve25519_base($0.baseAddress!, sk.baseAddress!) }
        }
        guard rc == 0 else { throw .malformedInput("X25519 secret key") }
        self.secretKey = secretKey
        publicKey = pk
    }
}

/// `ephemeral public key (32) ‖ KeyWrap box (72)`: an ephemeral X25519 agreement with the recipient,
/// BLAKE2b over the shared secret and both public keys as the wrapping key, then XChaCha20-Poly1305
/// with the caller's associated data (which `crypto_box_seal` would not bind).
public enum KeySealing {
    public static var sealedByteCount: Int { SealingKeyPair.publicKeyByteCount + KeyWrap.wrappedByteCount }

    public static func seal(_ key: SymmetricKey, to publicKey: [UInt8], associatedData: [UInt8]) throws(CryptoError) -> [UInt8] {
        guard publicKey.count == SealingKeyPair.publicKeyByteCount else { throw .malformedInput("X25519 public key") }
        let ephemeral = try SealingKeyPair.random()
        let kek = try wrappingKey(secret: ephemeral.secretKey, peer: publicKey, ephemeral: ephemeral.publicKey, recipient: publicKey)
        return ephemeral.publicKey + KeyWrap.wrap(key, with: kek, associatedData: associatedData)
    }

    public static func open(_ sealed: [UInt8], with recipient: SealingKeyPair, associatedData: [UInt8]) throws(CryptoError) -> SymmetricKey {
        let n = SealingKeyPair.publicKeyByteCount
        guard sealed.count == sealedByteCount else { throw .malformedInput("sealed key length") }
        let ephemeral = Array(sealed[0..<n])
        let kek = try wrappingKey(secret: recipient.secretKey, peer: ephemeral, ephemeral: ephemeral, recipient: recipient.publicKey)
        return try KeyWrap.unwrap(Array(sealed[n...]), with: kek, associatedData: associatedData)
    }

    /// BLAKE2b-256("medvault.v2.key-seal" ‖ X25519(secret, peer) ‖ ephemeral pk ‖ recipient pk), straight
    /// into secure memory; the shared secret is zeroed.
    static func wrappingKey(secret: SymmetricKey, peer: [UInt8], ephemeral: [UInt8], recipient: [UInt8]) throws(CryptoError) -> SymmetricKey {
        var shared = [UInt8](repeating: 0, count: Int(crypto_scalarmult_curve25519_bytes()))
        defer { wipe(&shared) }
        let rc = secret.withUnsafeBytes { sk in
            shared.withUnsafeMutableBytes { out in
                peer.withUnsafeBytes { crypto_scalarmult_curve25519(out.baseAddress!, sk.baseAddress!, $0.baseAddress!) }
            }
        }
        // A low-order peer key gives an all-zero secret; libsodium reports it.
        guard rc == 0 else { throw .malformedInput("X25519 public key of low order") }
        var input = Array("medvault.v2.key-seal".utf8) + shared + ephemeral + recipient
        defer { wipe(&input) }
        var out = input.withUnsafeBytes { blake2b256($0) }
        return try SymmetricKey(consuming: &out)
    }
}
