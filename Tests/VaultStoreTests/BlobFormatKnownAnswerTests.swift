import VaultFormats
import VaultIO
import Foundation
import Testing
import TestSupport
@testable import VaultCrypto
@testable import VaultStore

/// Known-answer tests for blob format v1. `Fixtures/blob-v1.bin` was written once by this code and is
/// committed: if the layout or any algorithm changes, these tests fail. Keys and plaintext are fixed:
/// patient key = bytes 0x00…0x1f, content key = 0x20…0x3f, id = 0xa0…0xaf, plaintext = 70,000 bytes
/// of `i * 7 mod 251` (two chunks: 65,536 + 4,464).
@Suite struct BlobFormatKnownAnswerTests {
    static let plaintext: [UInt8] = (0..<70_000).map { UInt8(($0 * 7) % 251) }
    static func pattern(_ n: Int) -> [UInt8] { (0..<n).map { UInt8(($0 * 7) % 251) } }
    static let id = BlobID(bytes: (0xA0...0xAF).map { UInt8($0) })

    static func patientKey() throws -> SymmetricKey { var b = (0..<32).map { UInt8($0) }; return try SymmetricKey(consuming: &b) }
    static func contentKey() throws -> SymmetricKey { var b = (32..<64).map { UInt8($0) }; return try SymmetricKey(consuming: &b) }
    static var fixture: String { Bundle.module.path(forResource: "blob-v1", ofType: "bin", inDirectory: "Fixtures") ?? "" }

    /// Regenerates the fixture (run once with MEDVAULT_WRITE_FIXTURES=<path to Fixtures>).
    @Test(.enabled(if: ProcessInfo.processInfo.environment["MEDVAULT_WRITE_FIXTURES"] != nil))
    func writeFixture() throws {
        let dir = TempDir()
        defer { dir.remove() }
        try writeBytes(dir.sub("plain"), Self.plaintext)
        let src = try FileIO.Descriptor.open(dir.sub("plain"), flags: O_RDONLY)
        let out = ProcessInfo.processInfo.environment["MEDVAULT_WRITE_FIXTURES"]! + "/blob-v1.bin"
        try? FileManager.default.removeItem(atPath: out)
        _ = try BlobCodec.encrypt(
            source: src, to: out, id: Self.id, patientKey: Self.patientKey(), contentKey: Self.contentKey(), version: BlobFormat.streamVersion)
    }

    func decrypt(_ bytes: [UInt8], id: BlobID = Self.id) throws -> ([UInt8], BlobDigest) {
        let dir = TempDir()
        defer { dir.remove() }
        try writeBytes(dir.sub("b"), bytes)
        var out: [UInt8] = []
        let d = try BlobCodec.decrypt(path: dir.sub("b"), id: id, patientKey: Self.patientKey(), contentKey: Self.contentKey()) {
            out += $0
        }
        return (out, d)
    }

    @Test func fixtureHasTheDocumentedLayoutAndDecrypts() throws {
        let blob = readBytes(Self.fixture)
        // 124-byte header + 2 chunks × 17 bytes of overhead.
        #expect(blob.count == 124 + 70_000 + 2 * 17)
        #expect(Array(blob[0..<8]) == Array("MEDVBLOB".utf8))
        #expect(Array(blob[8..<12]) == [0x00, 0x01, 0x00, 0x00])
        #expect(Array(blob[12..<28]) == Self.id.bytes)
        let (plain, digest) = try decrypt(blob)
        #expect(plain == Self.plaintext)
        #expect(digest.plainSize == 70_000)
        #expect(digest.contentMAC == KeyedHasher.hash(Self.plaintext, key: try Self.contentKey()))
    }

    @Test(arguments: [
        ("magic", 0, BlobError.notABlob),
        ("version", 9, BlobError.unsupportedVersion(0)),
        ("id", 20, BlobError.idMismatch),
        ("wrapped file key", 60, BlobError.tampered),
        ("stream header", 110, BlobError.tampered),
        ("first chunk", 5000, BlobError.tampered),
        ("last chunk", 124 + 65_553 + 100, BlobError.tampered),
    ])
    func everyRegionIsAuthenticated(region: String, offset: Int, expected: BlobError) throws {
        var blob = readBytes(Self.fixture)
        blob[offset] ^= 0x01
        #expect(throws: expected, "\(region)") { try decrypt(blob) }
    }

    /// A format-1 blob of `n` bytes of the fixture's pattern, encrypted now (new blobs are format 2:
    /// `BlobFormat2Tests`).
    func encryptExactly(_ n: Int) throws -> [UInt8] {
        let dir = TempDir()
        defer { dir.remove() }
        try writeBytes(dir.sub("p"), Self.pattern(n))
        let src = try FileIO.Descriptor.open(dir.sub("p"), flags: O_RDONLY)
        _ = try BlobCodec.encrypt(
            source: src, to: dir.sub("b"), id: Self.id, patientKey: Self.patientKey(), contentKey: Self.contentKey(),
            version: BlobFormat.streamVersion)
        return readBytes(dir.sub("b"))
    }

    @Test(arguments: [0, 1, 65_535, 65_536, 65_537, 131_072, 70_000])
    func blobSizeFormulaMatchesTheWriter(n: Int) throws {
        #expect(Int64(try encryptExactly(n).count) == BlobFormat.blobSize(forPlainSize: Int64(n), version: BlobFormat.streamVersion))
        #expect(try decrypt(try encryptExactly(n)).0 == Self.pattern(n))
    }

    @Test func truncationAppendingAndRenamingAreDetected() throws {
        let blob = readBytes(Self.fixture)
        #expect(throws: BlobError.truncated) { try decrypt(Array(blob.prefix(124 + 65_553))) }  // cut at a chunk boundary
        #expect(throws: BlobError.truncated) { try decrypt(Array(blob.prefix(100))) }  // inside the header
        #expect(throws: BlobError.tampered) { try decrypt(Array(blob.dropLast(3))) }  // inside the last chunk
        // Bytes appended to a short last chunk merge into it and break its tag; `verify` names this case
        // "trailing-data" from the size the catalog recorded.
        #expect(throws: BlobError.tampered) { try decrypt(blob + [0]) }
        // After a full final chunk they are read on their own.
        let full = try encryptExactly(65_536)
        #expect(throws: BlobError.trailingData) { try decrypt(full + [0, 0, 0]) }
        #expect(throws: BlobError.idMismatch) { try decrypt(blob, id: BlobID.random()) }
        // The right bytes under another key fail too.
        var other = (100..<132).map { UInt8($0) }
        let wrongKey = try SymmetricKey(consuming: &other)
        let dir = TempDir()
        defer { dir.remove() }
        try writeBytes(dir.sub("b"), blob)
        #expect(throws: BlobError.tampered) {
            try BlobCodec.decrypt(path: dir.sub("b"), id: Self.id, patientKey: wrongKey, contentKey: try Self.contentKey()) { _ in }
        }
    }
}
