import Testing
@testable import VaultCrypto

private func bytes(_ hex: String) -> [UInt8] {
    var out: [UInt8] = []
    var i = hex.startIndex
    while i < hex.endIndex {
        let j = hex.index(i, offsetBy: 2)
        out.append(UInt8(hex[i..<j], radix: 16)!)
        i = j
    }
    return out
}

private func hexString(_ b: [UInt8]) -> String { b.map { String(format: "%02x", $0) }.joined() }

/// RFC 8032 §7.1 test vectors (independently checked with Python's `cryptography`).
@Suite struct Ed25519KnownAnswerTests {
    struct Vector: Sendable {
        let seed, publicKey, message, signature: String
    }
    static let vectors = [
        // TEST 1: the empty message.
        Vector(
            seed: "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
            publicKey: "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", message: "",
            signature: "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"),
        // TEST 2: one byte.
        Vector(
            seed: "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
            publicKey: "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", message: "72",
            signature: "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"),
    ]

    @Test(arguments: vectors) func signsAndVerifiesLikeRFC8032(_ v: Vector) throws {
        var seedBytes = bytes(v.seed)
        let key = try Ed25519SigningKey(seed: try SymmetricKey(consuming: &seedBytes))
        #expect(hexString(key.publicKey.bytes) == v.publicKey)
        let sig = key.sign(bytes(v.message))
        #expect(hexString(sig) == v.signature)
        let pub = try #require(Ed25519PublicKey(bytes: bytes(v.publicKey)))
        #expect(pub.isValidSignature(bytes(v.signature), for: bytes(v.message)))
        // Expected failures: any flipped signature bit, another message, another key.
        for i in stride(from: 0, to: 64, by: 5) {
            var bad = sig
            bad[i] ^= 0x01
            #expect(!pub.isValidSignature(bad, for: bytes(v.message)), "flipped bit \(i) still verifies")
        }
        #expect(!pub.isValidSignature(sig, for: bytes(v.message) + [0]))
        #expect(!pub.isValidSignature(Array(sig.prefix(63)), for: bytes(v.message)))
    }

    @Test func publicKeyBase64RoundTripAndRejectsWrongLengths() throws {
        let pub = try #require(Ed25519PublicKey(bytes: bytes(Self.vectors[0].publicKey)))
        #expect(pub.base64 == "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=")
        #expect(Ed25519PublicKey(base64: pub.base64) == pub)
        #expect(Ed25519PublicKey(base64: " \(pub.base64)\n") == pub)
        #expect(Ed25519PublicKey(base64: "AAAA") == nil)
        #expect(Ed25519PublicKey(base64: "not base64!") == nil)
        #expect(Ed25519PublicKey(bytes: [1, 2, 3]) == nil)
    }

    @Test func signingKeyIsNeverPrinted() throws {
        let key = try Ed25519SigningKey(seed: try SymmetricKey.random())
        #expect(String(describing: key).contains("redacted"))
        #expect(!String(describing: key).contains(hexString(key.sign([]))))
    }
}

@Suite struct BLAKE2bHasherTests {
    @Test func streamingEqualsOneShotAndTheReference() {
        let h = BLAKE2bHasher()
        h.update(Array("a".utf8))
        h.update(Array("bc".utf8))
        // hashlib.blake2b(b"abc", digest_size=32)
        #expect(hexString(h.finalize()) == "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319")
        let data = (0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let s = BLAKE2bHasher()
        s.update(Array(data[..<65_537]))
        s.update(Array(data[65_537...]))
        #expect(s.finalize() == data.withUnsafeBytes { blake2b256($0) })
    }
}
