import VaultFormats
import VaultIO
import Foundation
import Testing
import TestSupport
@testable import VaultCrypto
@testable import VaultStore
#if canImport(Glibc)
import Glibc
#endif

/// Blob format 2 (docs/file-format.md §5a): chunks sealed one by one, read whole or by range.
/// `Fixtures/blob-v2.bin` was written once by this code and is committed, with the keys and plaintext
/// of the format-1 fixture (patient key 0x00…0x1f, content key 0x20…0x3f, id 0xa0…0xaf, 70,000 bytes
/// of `i * 7 mod 251`: two chunks, 65,536 + 4,464).
@Suite struct BlobFormat2Tests {
    typealias KAT = BlobFormatKnownAnswerTests
    static var fixture: String { Bundle.module.path(forResource: "blob-v2", ofType: "bin", inDirectory: "Fixtures") ?? "" }
    /// BLAKE2b-256 of the fixture as committed: regenerating it fails this test.
    static let fixtureHash = "d35d934cb09b1cbacbc31ad59258d56465aae6e35ab6513f56bfca74b791e367"

    /// Regenerates the fixture (run once with MEDVAULT_WRITE_FIXTURES=<path to Fixtures>).
    @Test(.enabled(if: ProcessInfo.processInfo.environment["MEDVAULT_WRITE_FIXTURES"] != nil))
    func writeFixture() throws {
        let out = ProcessInfo.processInfo.environment["MEDVAULT_WRITE_FIXTURES"]! + "/blob-v2.bin"
        try? FileManager.default.removeItem(atPath: out)
        try writeBytes(out, try Self.encrypt(KAT.plaintext))
    }

    /// `bytes` encrypted now, in `version`.
    static func encrypt(_ bytes: [UInt8], version: UInt16 = BlobFormat.seekableVersion) throws -> [UInt8] {
        let dir = TempDir()
        defer { dir.remove() }
        try writeBytes(dir.sub("p"), bytes)
        let src = try FileIO.Descriptor.open(dir.sub("p"), flags: O_RDONLY)
        let digest = try BlobCodec.encrypt(
            source: src, to: dir.sub("b"), id: KAT.id, patientKey: KAT.patientKey(), contentKey: KAT.contentKey(), version: version)
        let blob = readBytes(dir.sub("b"))
        #expect(digest.ciphertextHash == Self.blake2b(blob))
        #expect(digest.blobSize == Int64(blob.count))
        return blob
    }

    /// The whole-blob reader.
    static func decrypt(_ blob: [UInt8], id: BlobID = KAT.id) throws -> [UInt8] {
        let dir = TempDir()
        defer { dir.remove() }
        try writeBytes(dir.sub("b"), blob)
        var out: [UInt8] = []
        let d = try BlobCodec.decrypt(path: dir.sub("b"), id: id, patientKey: KAT.patientKey(), contentKey: KAT.contentKey()) { out += $0 }
        #expect(d.plainSize == Int64(out.count))
        #expect(d.blobSize == Int64(blob.count))
        return out
    }

    /// A blob's bytes opened by range; `expectedSize` plays the catalog's `blobSize`.
    final class Ranged {
        let dir = TempDir()
        let blob: SeekableBlob?
        init(_ bytes: [UInt8], expectedSize: Int64? = nil, id: BlobID = KAT.id) throws {
            try writeBytes(dir.sub("b"), bytes)
            do {
                blob = try SeekableBlob.open(
                    try FileIO.Descriptor.open(dir.sub("b"), flags: O_RDONLY), id: id, patientKey: KAT.patientKey(), expectedSize: expectedSize)
            } catch {
                dir.remove()
                throw error
            }
        }
        deinit { dir.remove() }
        func read(_ offset: Int, _ count: Int) throws -> [UInt8] { try #require(blob).read(Int64(offset), count) }
    }

    static func blake2b(_ bytes: [UInt8]) -> [UInt8] {
        let h = BLAKE2bHasher()
        h.update(bytes)
        return h.finalize()
    }

    static func be64(_ v: Int) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (56 - 8 * $0)) } }

    @Test func fixtureHasTheDocumentedLayout() throws {
        let blob = readBytes(Self.fixture)
        #expect(hex(Self.blake2b(blob)) == Self.fixtureHash)
        // 116-byte header + 2 chunks × 16 bytes of tag.
        #expect(blob.count == 116 + 70_000 + 2 * 16)
        #expect(Array(blob[0..<8]) == Array("MEDVBLOB".utf8))
        #expect(Array(blob[8..<12]) == [0x00, 0x02, 0x00, 0x00])
        #expect(Array(blob[12..<28]) == KAT.id.bytes)
        #expect(try Self.decrypt(blob) == KAT.plaintext)
    }

    /// Every chunk of the fixture, rebuilt from the spec alone: FK unwrapped from bytes 28–99, nonce =
    /// bytes 100–115 ‖ u64 BE index, AD = bytes 0–115 ‖ u64 BE index ‖ final flag. Sealing the clear
    /// chunk again with those inputs gives the fixture's bytes exactly.
    @Test func chunksAreTheSpecifiedAEADOutput() throws {
        let blob = readBytes(Self.fixture)
        let header = Array(blob[0..<116])
        let fileKey = try KeyWrap.unwrap(
            Array(blob[28..<100]), with: try KAT.patientKey(),
            associatedData: Array("medvault.v1.file-key|".utf8) + Array(blob[0..<28]))
        let plain = KAT.plaintext
        for (index, range) in [(0, 0..<65_536), (1, 65_536..<70_000)] {
            let nonce = Array(blob[100..<116]) + Self.be64(index)
            let ad = header + Self.be64(index) + [index == 1 ? 1 : 0]
            var sealed = [UInt8](repeating: 0, count: range.count + 16)
            _ = Array(plain[range]).withUnsafeBytes { p in nonce.withUnsafeBytes { n in ad.withUnsafeBytes { a in
                sealed.withUnsafeMutableBytes { o in NoncedAEAD.seal(p, nonce: n, key: fileKey, associatedData: a, into: o) } } } }
            let start = 116 + index * 65_552
            #expect(sealed == Array(blob[start..<(start + range.count + 16)]), "chunk \(index)")
        }
    }

    @Test(arguments: [0, 1, 65_535, 65_536, 65_537, 131_072, 3 * 1_048_576 + 123])
    func roundTripsWholeAndByRange(n: Int) throws {
        let plain = KAT.pattern(n)
        let blob = try Self.encrypt(plain)
        #expect(Int64(blob.count) == BlobFormat.blobSize(forPlainSize: Int64(n)))
        #expect(try Self.decrypt(blob) == plain)
        let r = try Ranged(blob, expectedSize: Int64(blob.count))
        let b = try #require(r.blob)
        #expect(b.plainSize == Int64(n))
        #expect(b.chunkCount == max(1, Int64((n + 65_535) / 65_536)))
        #expect(try r.read(0, n + 10) == plain)
        let edges = [0, 1, 65_535, 65_536, 65_537, 131_071, 131_072, n / 2, n - 1, n]
        for from in edges where from >= 0 && from <= n {
            for count in [1, 2, 65_536, 65_537, 200_000] {
                let want = Array(plain[from..<min(n, from + count)])
                #expect(try r.read(from, count) == want, "\(from) +\(count) of \(n)")
            }
        }
    }

    @Test func aRangeDecryptsOnlyItsChunks() throws {
        let plain = KAT.pattern(40 * 65_536 + 99)
        let r = try Ranged(try Self.encrypt(plain))
        let b = try #require(r.blob)
        #expect(try r.read(30 * 65_536 + 10, 100) == Array(plain[(30 * 65_536 + 10)..<(30 * 65_536 + 110)]))
        #expect(b.chunksDecrypted == 1)
        #expect(try r.read(30 * 65_536 + 200, 100) == Array(plain[(30 * 65_536 + 200)..<(30 * 65_536 + 300)]))
        #expect(b.chunksDecrypted == 1)  // the chunk in hand
        #expect(try r.read(35 * 65_536 - 1, 2) == Array(plain[(35 * 65_536 - 1)..<(35 * 65_536 + 1)]))
        #expect(b.chunksDecrypted == 3)
        #expect(try r.read(40 * 65_536, 1000) == Array(plain[(40 * 65_536)...]))  // the final chunk
        #expect(b.chunksDecrypted == 4)
    }

    // MARK: - Damage

    /// 4 full chunks and a short final one (4 × 65,536 + 1,000 clear bytes).
    static let plain5 = KAT.pattern(4 * 65_536 + 1_000)
    static func chunkStart(_ i: Int) -> Int { 116 + i * 65_552 }

    /// What the whole reader and the range reader (with the catalog's size, and with the file's own)
    /// say about a damaged blob; `chunk` is the damaged chunk a range read touches.
    func expectDetected(
        _ damaged: [UInt8], original: [UInt8], chunk: Int, whole: BlobError, byCatalogSize: BlobError, byOwnSize: BlobError,
        _ comment: Comment
    ) throws {
        #expect(throws: whole, comment) { try Self.decrypt(damaged) }
        #expect(throws: byCatalogSize, comment) {
            let r = try Ranged(damaged, expectedSize: Int64(original.count))
            _ = try r.read(chunk * 65_536, 65_536)
        }
        #expect(throws: byOwnSize, comment) {
            let r = try Ranged(damaged)
            _ = try r.read(chunk * 65_536, 65_536)
        }
    }

    @Test func damageIsDetectedWholeAndByRange() throws {
        let blob = try Self.encrypt(Self.plain5)
        let c = Self.chunkStart
        var flipped = blob
        flipped[c(2) + 100] ^= 0x01
        try expectDetected(flipped, original: blob, chunk: 2, whole: .tampered, byCatalogSize: .tampered, byOwnSize: .tampered, "flip in chunk 2")
        // The chunks around it still read: damage costs only what it touches.
        #expect(try Ranged(flipped, expectedSize: Int64(blob.count)).read(65_536, 65_536) == Array(Self.plain5[65_536..<131_072]))

        var tag = blob
        tag[c(1) + 65_551] ^= 0x80
        try expectDetected(tag, original: blob, chunk: 1, whole: .tampered, byCatalogSize: .tampered, byOwnSize: .tampered, "flip in chunk 1's tag")

        let swapped = Array(blob[0..<c(1)] + blob[c(2)..<c(3)] + blob[c(1)..<c(2)] + blob[c(3)...])
        try expectDetected(swapped, original: blob, chunk: 1, whole: .tampered, byCatalogSize: .tampered, byOwnSize: .tampered, "chunks 1 and 2 swapped")
        try expectDetected(swapped, original: blob, chunk: 2, whole: .tampered, byCatalogSize: .tampered, byOwnSize: .tampered, "chunks 1 and 2 swapped")

        // Cut at a chunk boundary: the new last chunk was sealed as not final.
        let cut = Array(blob[0..<c(4)])
        try expectDetected(cut, original: blob, chunk: 3, whole: .truncated, byCatalogSize: .truncated, byOwnSize: .truncated, "final chunk dropped")
        try expectDetected(Array(blob[0..<c(2)]), original: blob, chunk: 1, whole: .truncated, byCatalogSize: .truncated, byOwnSize: .truncated, "cut after chunk 1")

        // Bytes dropped inside a chunk: it and every later chunk move.
        let holed = Array(blob[0..<(c(1) + 500)] + blob[(c(1) + 600)...])
        try expectDetected(holed, original: blob, chunk: 1, whole: .tampered, byCatalogSize: .truncated, byOwnSize: .tampered, "100 bytes dropped in chunk 1")
        try expectDetected(Array(blob.dropLast(5)), original: blob, chunk: 4, whole: .tampered, byCatalogSize: .truncated, byOwnSize: .tampered, "cut inside the last chunk")

        // Appended bytes merge into a short final chunk.
        try expectDetected(blob + [0, 0, 0], original: blob, chunk: 4, whole: .tampered, byCatalogSize: .trailingData, byOwnSize: .tampered, "bytes after a short final chunk")

        // The header: the nonce prefix is in every chunk's nonce and AD; the id is checked by name.
        var nonce = blob
        nonce[110] ^= 0x01
        try expectDetected(nonce, original: blob, chunk: 0, whole: .tampered, byCatalogSize: .tampered, byOwnSize: .tampered, "nonce prefix")
        var wrapped = blob
        wrapped[60] ^= 0x01
        try expectDetected(wrapped, original: blob, chunk: 0, whole: .tampered, byCatalogSize: .tampered, byOwnSize: .tampered, "wrapped file key")
        var reserved = blob
        reserved[11] = 1
        try expectDetected(reserved, original: blob, chunk: 0, whole: .tampered, byCatalogSize: .tampered, byOwnSize: .tampered, "reserved bytes")
        #expect(throws: BlobError.idMismatch) { try Self.decrypt(blob, id: BlobID.random()) }
        #expect(throws: BlobError.idMismatch) { _ = try Ranged(blob, id: BlobID.random()) }
        #expect(throws: BlobError.truncated) { try Self.decrypt(Array(blob[0..<116])) }
        #expect(throws: BlobError.truncated) { _ = try Ranged(Array(blob[0..<116])) }
        #expect(throws: BlobError.truncated) { try Self.decrypt(Array(blob[0..<90])) }
    }

    /// A blob that ends with a full final chunk: what follows it is read on its own and named.
    @Test func bytesOrAChunkAfterAFullFinalChunkAreTrailingData() throws {
        let plain = KAT.pattern(3 * 65_536)
        let blob = try Self.encrypt(plain)
        let c = Self.chunkStart
        #expect(blob.count == c(3))
        let appendedChunk = blob + Array(blob[c(0)..<c(1)])
        try expectDetected(appendedChunk, original: blob, chunk: 2, whole: .trailingData, byCatalogSize: .trailingData, byOwnSize: .trailingData, "a chunk appended")
        try expectDetected(blob + [1, 2, 3], original: blob, chunk: 2, whole: .trailingData, byCatalogSize: .trailingData, byOwnSize: .tampered, "bytes appended")
        // The final flag cannot move: the last chunk dropped leaves a non-final chunk last.
        try expectDetected(Array(blob[0..<c(2)]), original: blob, chunk: 1, whole: .truncated, byCatalogSize: .truncated, byOwnSize: .truncated, "final chunk dropped")
        // The final chunk moved in front of the others fails where it is and where it was.
        let moved = Array(blob[0..<c(0)] + blob[c(2)..<c(3)] + blob[c(0)..<c(2)])
        try expectDetected(moved, original: blob, chunk: 0, whole: .tampered, byCatalogSize: .tampered, byOwnSize: .tampered, "final chunk first")
        try expectDetected(moved, original: blob, chunk: 2, whole: .tampered, byCatalogSize: .tampered, byOwnSize: .tampered, "final chunk first")
    }

    /// A chunk of another blob (same patient, same position) does not fit: the header is in the AD.
    @Test func aChunkFromAnotherBlobIsRefused() throws {
        let a = try Self.encrypt(Self.plain5), b = try Self.encrypt(Self.plain5)
        let c = Self.chunkStart
        let mixed = Array(a[0..<c(1)] + b[c(1)..<c(2)] + a[c(2)...])
        try expectDetected(mixed, original: a, chunk: 1, whole: .tampered, byCatalogSize: .tampered, byOwnSize: .tampered, "chunk 1 of another blob")
    }

    // MARK: - Format 1

    @Test func formatOneStillDecryptsAndIsNotSeekable() throws {
        let plain = KAT.pattern(3 * 65_536 + 7)
        let v1 = try Self.encrypt(plain, version: BlobFormat.streamVersion)
        #expect(Array(v1[8..<10]) == [0, 1])
        #expect(Int64(v1.count) == BlobFormat.blobSize(forPlainSize: Int64(plain.count), version: BlobFormat.streamVersion))
        #expect(try Self.decrypt(v1) == plain)
        #expect(try Ranged(v1).blob == nil)
        #expect(try Ranged(readBytes(BlobFormatKnownAnswerTests.fixture)).blob == nil)
        var other = v1
        other[9] = 3
        #expect(throws: BlobError.unsupportedVersion(3)) { try Self.decrypt(other) }
        #expect(throws: BlobError.unsupportedVersion(3)) { _ = try Ranged(other) }
    }
}
