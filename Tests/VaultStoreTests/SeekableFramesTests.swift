import VaultCrypto
import VaultDICOM
import VaultFormats
import VaultIO
import Foundation
import Testing
import TestSupport
@testable import VaultStore
#if canImport(Glibc)
import Glibc
#endif

/// The frames path over the two blob formats: a format-2 frame costs its own chunks; a format-1 blob
/// is still read forward, up to the frame.
@Suite struct SeekableFramesTests {
    /// One instance of 512 native frames of 128 × 128 × 16 bit (32 KiB each, 16 MiB), imported.
    struct Imported {
        let dir: TempDir
        let vault: Vault
        let item: RetrievableInstance
        let original: [UInt8]
        let layout: DICOMPixelLayout
        let sopInstanceUID: String
    }

    static func importBigFile(_ label: String) throws -> Imported {
        let dir = TempDir(label)
        let file = dir.sub("input/big.dcm")
        try FileManager.default.createDirectory(atPath: dir.sub("input"), withIntermediateDirectories: true)
        let r = try run("/usr/bin/env", ["python3", packageRoot + "/tools/gen-dicom.py", "big-file", file, "--mib", "16", "--size", "128"])
        #expect(r.status == 0, "\(r.stderr)")
        let vault = try makeVault(dir).vault
        _ = try vault.importFiles([dir.sub("input")])
        let h = try DICOMParser.parse(path: file)
        let sop = h.sopInstanceUID ?? ""
        let item = try #require(try vault.instanceForRetrieval(study: h.studyInstanceUID ?? "", series: h.seriesInstanceUID ?? "", instance: sop))
        let original = readBytes(file)
        return Imported(dir: dir, vault: vault, item: item, original: original, layout: try DICOMPixelLayout.read(original), sopInstanceUID: sop)
    }

    /// Chunks of 64 KiB that the clear bytes `r` lie in.
    static func chunks(_ r: Range<UInt64>) -> Int { Int((r.upperBound - 1) / 65_536 - r.lowerBound / 65_536 + 1) }

    @Test func aFormatTwoFrameDecryptsOnlyItsOwnChunks() throws {
        let t = try Self.importBigFile("medvault-seek-frames")
        defer { t.dir.remove() }
        #expect(t.layout.numberOfFrames == 512)
        var cost: [Int: Int] = [:]
        for k in [0, 1, 99, 249, 399, 511] {
            let frames = try t.vault.openFrames(t.item)
            defer { frames.close() }
            #expect(frames.readsByRange)
            let header = frames.chunksDecrypted
            #expect(header == 1, "the header and the layout come from the first chunk")
            #expect(try frames.storedFrame(k) == (try t.layout.storedFrame(k, in: t.original)), "frame \(k + 1)")
            let r = try t.layout.nativeFrameRange(k)
            // The frame's chunks, less the first one when the header's chunk is one of them.
            #expect(frames.chunksDecrypted <= header + Self.chunks(r), "frame \(k + 1): \(frames.chunksDecrypted) chunks")
            #expect(frames.bytesDecrypted <= UInt64(frames.chunksDecrypted) * 65_536)
            cost[k] = frames.chunksDecrypted
        }
        // Frame 400 of 512 costs what frame 2 costs: no chunk before it is decrypted.
        #expect(try #require(cost[399]) <= (try #require(cost[1])) + 1, "\(cost)")
        #expect(try #require(cost[511]) <= 3, "\(cost)")

        // Any order, one reader: an earlier frame is no second pass, only its own chunks.
        let frames = try t.vault.openFrames(t.item)
        defer { frames.close() }
        for k in [400, 3, 200, 2] { #expect(try frames.storedFrame(k) == (try t.layout.storedFrame(k, in: t.original))) }
        #expect(frames.passes == 1)
        #expect(frames.chunksDecrypted <= 1 + 4 * 2)
        // The bulk data route's pieces: the last 100 KiB of the pixel data, by range.
        let end = t.layout.valueOffset + (t.layout.valueLength ?? 0)
        var tail: [UInt8] = []
        let before = frames.chunksDecrypted
        try frames.forEachPiece(of: (end - 100_000)..<end) { tail += $0 }
        #expect(tail == Array(t.original[Int(end - 100_000)..<Int(end)]))
        #expect(frames.chunksDecrypted - before <= 3)
        // /metadata reads the start only, and the whole instance still exports byte for byte.
        let metadata = try t.vault.metadataWithPixelLayout(t.item)
        #expect(metadata.pixelLayout?.numberOfFrames == 512)
        _ = try t.vault.export(.instance(t.sopInstanceUID), to: t.dir.sub("out"))
        #expect(readBytes(try #require(allFiles(under: t.dir.sub("out")).first)) == t.original)
    }

    /// A damaged chunk inside a frame fails that frame, and only frames that touch it.
    @Test func aDamagedChunkFailsTheFramesInIt() throws {
        let t = try Self.importBigFile("medvault-seek-damage")
        defer { t.dir.remove() }
        let resolved = try #require(try t.vault.resolve(.instance(t.sopInstanceUID)).first)
        let id = try #require(BlobID(hex: resolved.row.blobID))
        let path = t.vault.layout.blob(id)
        // Frame 300's first clear byte lies in chunk c; flip a byte of that chunk's ciphertext.
        let r = try t.layout.nativeFrameRange(299)
        let c = Int64(r.lowerBound / 65_536)
        var blob = readBytes(path)
        blob[Int(BlobFormat.V2.chunkOffset(c)) + 10] ^= 0x01
        try FileManager.default.removeItem(atPath: path)
        try writeBytes(path, blob)
        let frames = try t.vault.openFrames(t.item)
        defer { frames.close() }
        #expect(throws: BlobError.tampered) { _ = try frames.storedFrame(299) }
        #expect(try frames.storedFrame(0) == (try t.layout.storedFrame(0, in: t.original)))
        #expect(try frames.storedFrame(450) == (try t.layout.storedFrame(450, in: t.original)))
        #expect(try t.vault.verify().problems.map(\.kind) == [.tampered])
    }

    /// `verify` names chunk-level damage of a format-2 blob as it did for format 1: swapped chunks
    /// are altered, a dropped final chunk is truncated, an appended chunk is trailing data.
    @Test func verifyNamesChunkDamage() throws {
        let t = try Self.importBigFile("medvault-seek-verify")
        defer { t.dir.remove() }
        #expect(try t.vault.verify().ok)
        let resolved = try #require(try t.vault.resolve(.instance(t.sopInstanceUID)).first)
        let path = t.vault.layout.blob(try #require(BlobID(hex: resolved.row.blobID)))
        let original = readBytes(path)
        #expect(Array(original[8..<10]) == [0, 2])
        let c = { (i: Int64) in Int(BlobFormat.V2.chunkOffset(i)) }
        let chunks = Int64((original.count - 116 + 65_551) / 65_552)
        let cases: [(String, [UInt8], VerifyProblem.Kind)] = [
            ("chunks 10 and 11 swapped", Array(original[0..<c(10)] + original[c(11)..<c(12)] + original[c(10)..<c(11)] + original[c(12)...]), .tampered),
            ("final chunk dropped", Array(original[0..<c(chunks - 1)]), .truncated),
            ("a chunk appended", original + Array(original[c(3)..<c(4)]), .trailingData),
            ("a bit flipped in the nonce prefix", { var b = original; b[105] ^= 1; return b }(), .tampered),
        ]
        for (what, bytes, kind) in cases {
            try FileManager.default.removeItem(atPath: path)
            try writeBytes(path, bytes)
            #expect(try t.vault.verify().problems.map(\.kind) == [kind], "\(what)")
            #expect(throws: (any Error).self, "\(what)") { _ = try t.vault.export(.instance(t.sopInstanceUID), to: t.dir.sub("out-" + "\(kind)")) }
        }
        try FileManager.default.removeItem(atPath: path)
        try writeBytes(path, original)
        #expect(try t.vault.verify().ok)
    }

    /// A format-1 blob (an earlier release's) behind the same reader: read forward, one pass for
    /// frames in increasing order, a second for an earlier one.
    @Test func aFormatOneBlobIsReadForward() throws {
        let t = try Self.importBigFile("medvault-seek-v1")
        defer { t.dir.remove() }
        // Rewrite the instance's blob in format 1, same id, same patient key.
        let resolved = try #require(try t.vault.resolve(.instance(t.sopInstanceUID)).first)
        let id = try #require(BlobID(hex: resolved.row.blobID))
        let key = try t.vault.patientKey(ref: resolved.patientRef, wrapped: resolved.wrappedPatientKey)
        let path = t.vault.layout.blob(id)
        try writeBytes(t.dir.sub("clear"), t.original)
        _ = try BlobCodec.encrypt(
            source: try FileIO.Descriptor.open(t.dir.sub("clear"), flags: O_RDONLY), to: t.dir.sub("v1"), id: id, patientKey: key,
            contentKey: t.vault.keyring.contentMAC, version: BlobFormat.streamVersion)
        try FileManager.default.removeItem(atPath: t.dir.sub("clear"))
        try FileIO.rename(t.dir.sub("v1"), path)
        #expect(Array(readBytes(path)[8..<10]) == [0, 1])

        let ahead = UInt64(6 * 64 << 10)  // the decryptor's window (4 chunks) and the chunk in hand
        for k in [0, 10, 400] {
            let frames = try t.vault.openFrames(t.item)
            defer { frames.close() }
            #expect(!frames.readsByRange)
            #expect(try frames.storedFrame(k) == (try t.layout.storedFrame(k, in: t.original)))
            let end = try t.layout.nativeFrameRange(k).upperBound
            #expect(frames.bytesDecrypted >= end && frames.bytesDecrypted <= end + ahead, "frame \(k + 1): \(frames.bytesDecrypted)")
            #expect(frames.passes == 1)
        }
        let frames = try t.vault.openFrames(t.item)
        defer { frames.close() }
        for k in [2, 5, 40] { #expect(try frames.storedFrame(k) == (try t.layout.storedFrame(k, in: t.original))) }
        #expect(frames.passes == 1)
        #expect(try frames.storedFrame(1) == (try t.layout.storedFrame(1, in: t.original)))
        #expect(frames.passes == 2)
        #expect(try t.vault.metadataWithPixelLayout(t.item).pixelLayout?.numberOfFrames == 512)
    }
}
