import Foundation
import Testing
@testable import VaultCrypto

private func key(_ seed: UInt8) throws -> SymmetricKey {
    var bytes = (0..<32).map { UInt8($0) &+ seed }
    return try SymmetricKey(consuming: &bytes)
}

private func hexString(_ b: [UInt8]) -> String { b.map { String(format: "%02x", $0) }.joined() }

@Suite struct KeyedHashTests {
    // Expected values computed independently with Python's hashlib.blake2b.
    @Test func keyedBLAKE2bMatchesReferenceImplementation() throws {
        let k = try key(0)
        #expect(hexString(KeyedHasher.hash(Array("medvault known answer".utf8), key: k))
            == "fc083e657c5c41398e924c5117935f20f2eb8aa1cb761ef64434f62a4395ac50")
        #expect(hexString(KeyedHasher.hash([], key: k)) == "4e51e7a913fc80137da52880fecca175bf81e117d5c68126dc2774033517ea0d")
    }

    @Test func unkeyedBLAKE2bMatchesReferenceImplementation() {
        let d = Array("abc".utf8).withUnsafeBytes { blake2b256($0) }
        #expect(hexString(d) == "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319")
    }

    @Test func streamingEqualsOneShot() throws {
        let k = try key(3)
        let data = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let h = KeyedHasher(key: k)
        h.update(Array(data[..<12345]))
        h.update(Array(data[12345...]))
        #expect(h.finalize() == KeyedHasher.hash(data, key: k))
        #expect(KeyedHasher.hash(data, key: try key(4)) != KeyedHasher.hash(data, key: k))
    }
}

@Suite struct AEADTests {
    @Test func sealOpenRoundTripAndEveryTamperFails() throws {
        let k = try key(1)
        let msg = Array("Doe^Jane|MRN0012345".utf8)
        let box = AEAD.seal(msg, key: k, associatedData: Array("ad".utf8))
        #expect(box.count == msg.count + AEAD.overhead)
        #expect(try AEAD.open(box, key: k, associatedData: Array("ad".utf8)) == msg)
        // Wrong key, wrong associated data, any flipped bit: all fail the same way.
        #expect(throws: CryptoError.authenticationFailed) { try AEAD.open(box, key: try key(2), associatedData: Array("ad".utf8)) }
        #expect(throws: CryptoError.authenticationFailed) { try AEAD.open(box, key: k, associatedData: Array("ax".utf8)) }
        for i in stride(from: 0, to: box.count, by: 7) {
            var bad = box
            bad[i] ^= 0x01
            #expect(throws: CryptoError.authenticationFailed) { try AEAD.open(bad, key: k, associatedData: Array("ad".utf8)) }
        }
        #expect(throws: CryptoError.malformedInput("sealed box too short")) { try AEAD.open([1, 2, 3], key: k, associatedData: []) }
    }

    @Test func nonceIsFreshEachTime() throws {
        let k = try key(1)
        #expect(AEAD.seal([1, 2, 3], key: k, associatedData: []) != AEAD.seal([1, 2, 3], key: k, associatedData: []))
    }

    @Test func keyWrapRoundTripsOnlyWithTheRightKEKAndContext() throws {
        let inner = try SymmetricKey.random()
        let kek = try key(9)
        let wrapped = KeyWrap.wrap(inner, with: kek, associatedData: Array("slot-1".utf8))
        #expect(wrapped.count == 72)
        let back = try KeyWrap.unwrap(wrapped, with: kek, associatedData: Array("slot-1".utf8))
        #expect(back.storage.equals(inner.storage))
        #expect(throws: CryptoError.authenticationFailed) { try KeyWrap.unwrap(wrapped, with: try key(10), associatedData: Array("slot-1".utf8)) }
        #expect(throws: CryptoError.authenticationFailed) { try KeyWrap.unwrap(wrapped, with: kek, associatedData: Array("slot-2".utf8)) }
    }
}

@Suite struct PassphraseKDFTests {
    static let fast = Argon2idParameters(opsLimit: 1, memLimit: 8 << 20)

    @Test func sameInputsSameKeyDifferentPassphraseDifferentKey() throws {
        let salt = [UInt8](repeating: 7, count: Argon2idParameters.saltByteCount)
        var a = Array("correct horse battery".utf8), b = Array("correct horse battery".utf8), c = Array("correct horse batterz".utf8)
        let k1 = try PassphraseKDF.deriveKey(passphrase: try SecureBytes(consuming: &a), salt: salt, parameters: Self.fast)
        let k2 = try PassphraseKDF.deriveKey(passphrase: try SecureBytes(consuming: &b), salt: salt, parameters: Self.fast)
        let k3 = try PassphraseKDF.deriveKey(passphrase: try SecureBytes(consuming: &c), salt: salt, parameters: Self.fast)
        #expect(k1.storage.equals(k2.storage))
        #expect(!k1.storage.equals(k3.storage))
        // The caller's copies were wiped.
        #expect(a.allSatisfy { $0 == 0 })
    }

    @Test func absurdParametersAreRefusedNotRun() throws {
        var p = Array("passphrase!".utf8)
        let pass = try SecureBytes(consuming: &p)
        let salt = [UInt8](repeating: 1, count: Argon2idParameters.saltByteCount)
        #expect(throws: CryptoError.malformedInput("Argon2id parameters out of range")) {
            try PassphraseKDF.deriveKey(passphrase: pass, salt: salt, parameters: .init(opsLimit: 1, memLimit: 1 << 40))
        }
        #expect(throws: CryptoError.malformedInput("Argon2id salt length")) {
            try PassphraseKDF.deriveKey(passphrase: pass, salt: [1, 2], parameters: Self.fast)
        }
    }

    @Test func subkeysAreIndependentAndDeterministic() throws {
        let m = try key(5)
        let a = try m.deriveSubkey(id: 1, context: "MVaultv1")
        let a2 = try m.deriveSubkey(id: 1, context: "MVaultv1")
        let b = try m.deriveSubkey(id: 2, context: "MVaultv1")
        #expect(a.storage.equals(a2.storage))
        #expect(!a.storage.equals(b.storage))
        #expect(!a.storage.equals(m.storage))
        #expect("\(a)" == "SymmetricKey(redacted)")
    }
}

@Suite struct SecretStreamTests {
    /// Encrypts `chunks` and returns (header, encrypted chunks).
    func encrypt(_ chunks: [[UInt8]], key k: SymmetricKey, ad: [UInt8]) -> ([UInt8], [[UInt8]]) {
        let enc = StreamEncryptor(key: k)
        var out: [[UInt8]] = []
        for (i, c) in chunks.enumerated() {
            var buf = [UInt8](repeating: 0, count: c.count + SecretStream.chunkOverhead)
            let n = c.withUnsafeBytes { p in ad.withUnsafeBytes { a in buf.withUnsafeMutableBytes { o in
                enc.push(p, final: i == chunks.count - 1, associatedData: a, into: o) } } }
            out.append(Array(buf[0..<n]))
        }
        return (enc.header, out)
    }

    func decrypt(_ header: [UInt8], _ chunks: [[UInt8]], key k: SymmetricKey, ad: [UInt8]) throws -> ([UInt8], Bool) {
        let dec = try StreamDecryptor(key: k, header: header)
        var plain: [UInt8] = []
        var final = false
        for c in chunks {
            var buf = [UInt8](repeating: 0, count: c.count)
            let r = try c.withUnsafeBytes { p in try ad.withUnsafeBytes { a in try buf.withUnsafeMutableBytes { o in
                try dec.pull(p, associatedData: a, into: o) } } }
            plain += buf[0..<r.count]
            final = r.isFinal
        }
        return (plain, final)
    }

    @Test func roundTripDetectsTruncationReorderAndAppend() throws {
        let k = try key(7)
        let chunks: [[UInt8]] = [Array(repeating: 1, count: 1000), Array(repeating: 2, count: 1000), [3, 3, 3]]
        let (h, enc) = encrypt(chunks, key: k, ad: [9])
        let (plain, final) = try decrypt(h, enc, key: k, ad: [9])
        #expect(plain == chunks.flatMap { $0 })
        #expect(final)
        // Dropping the final chunk leaves a stream that never reaches FINAL.
        #expect(try decrypt(h, Array(enc.dropLast()), key: k, ad: [9]).1 == false)
        #expect(throws: CryptoError.authenticationFailed) { try decrypt(h, [enc[1], enc[0], enc[2]], key: k, ad: [9]) }
        #expect(throws: CryptoError.trailingData) { try decrypt(h, enc + [enc[2]], key: k, ad: [9]) }
        #expect(throws: CryptoError.authenticationFailed) { try decrypt(h, enc, key: k, ad: [8]) }
    }
}

@Suite struct SecureMemoryTests {
    @Test func secretsAreRedactedAndCallerCopiesWiped() throws {
        var bytes = Array("super secret".utf8)
        let s = try SecureBytes(consuming: &bytes)
        #expect(bytes.allSatisfy { $0 == 0 })
        #expect(s.withUnsafeBytes { Array($0) } == Array("super secret".utf8))
        #expect("\(s)".contains("redacted"))
        #expect(!"\(s)".contains("secret\""))
        #expect(constantTimeEquals([1, 2, 3], [1, 2, 3]))
        #expect(!constantTimeEquals([1, 2, 3], [1, 2, 4]))
        #expect(!constantTimeEquals([1, 2], [1, 2, 3]))
    }
}

/// `NoncedAEAD` is libsodium's XChaCha20-Poly1305-IETF with the caller's nonce: checked against the
/// test vector of draft-irtf-cfrg-xchacha-03 §A.3.1 (the AEAD one), then for tamper evidence.
@Suite struct NoncedAEADTests {
    static func bytes(_ hex: String) -> [UInt8] {
        var out: [UInt8] = []
        var it = hex.makeIterator()
        while let a = it.next(), let b = it.next() { out.append(UInt8(String([a, b]), radix: 16) ?? 0) }
        return out
    }
    static let plaintext = Array(
        "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.".utf8)
    static let ad = bytes("50515253c0c1c2c3c4c5c6c7")
    static let nonce = bytes("404142434445464748494a4b4c4d4e4f5051525354555657")
    static let expected =
        "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452"
        + "2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff921f9664c97637da9768812f615c68b13b52e"
        + "c0875924c1c7987947deafd8780acf49"

    func seal(_ p: [UInt8], key k: SymmetricKey, nonce: [UInt8] = nonce, ad: [UInt8] = ad) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: p.count + NoncedAEAD.tagByteCount)
        let n = p.withUnsafeBytes { pp in nonce.withUnsafeBytes { nn in ad.withUnsafeBytes { aa in out.withUnsafeMutableBytes { o in
            NoncedAEAD.seal(pp, nonce: nn, key: k, associatedData: aa, into: o) } } } }
        #expect(n == out.count)
        return out
    }

    func open(_ c: [UInt8], key k: SymmetricKey, nonce: [UInt8] = nonce, ad: [UInt8] = ad) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: max(0, c.count - NoncedAEAD.tagByteCount))
        let n = try c.withUnsafeBytes { cc in try nonce.withUnsafeBytes { nn in try ad.withUnsafeBytes { aa in
            try out.withUnsafeMutableBytes { o in try NoncedAEAD.open(cc, nonce: nn, key: k, associatedData: aa, into: o) } } } }
        return Array(out[0..<n])
    }

    @Test func matchesTheXChaChaDraftVector() throws {
        var k = Self.bytes("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
        let key = try SymmetricKey(consuming: &k)
        let sealed = seal(Self.plaintext, key: key)
        #expect(hexString(sealed) == Self.expected)
        #expect(try open(sealed, key: key) == Self.plaintext)
    }

    @Test func anyChangeFailsToOpen() throws {
        let k = try key(9)
        let sealed = seal(Self.plaintext, key: k)
        var flipped = sealed
        flipped[3] ^= 1
        var otherNonce = Self.nonce
        otherNonce[23] ^= 1
        #expect(throws: CryptoError.authenticationFailed) { try open(flipped, key: k) }
        #expect(throws: CryptoError.authenticationFailed) { try open(sealed, key: k, nonce: otherNonce) }
        #expect(throws: CryptoError.authenticationFailed) { try open(sealed, key: k, ad: Self.ad + [0]) }
        #expect(throws: CryptoError.authenticationFailed) { try open(sealed, key: try key(10)) }
        #expect(throws: CryptoError.authenticationFailed) { try open(Array(sealed.prefix(15)), key: k) }
        #expect(try open(seal([], key: k), key: k) == [])
    }
}
