// Received instances (STOW-RS now, C-STORE next) past the memory limit: sealed on arrival into an
// unnamed file, read back authenticated, parsed in passes and imported byte for byte, with no clear
// byte in any file and no file left behind.
import VaultCrypto
import VaultDICOM
@testable import VaultFormats
import VaultIO
import Foundation
import Testing
import TestSupport
@testable import VaultStore
#if canImport(Glibc)
import Glibc
#endif

@Suite struct ReceivedInstanceTests {
    /// Bytes that are easy to find if they leak: a repeated marker with a counter.
    static func pattern(_ count: Int) -> [UInt8] {
        (0..<count).map { i in i % 64 < 8 ? Array("MVCLEAR!".utf8)[i % 8] : UInt8(truncatingIfNeeded: i / 64) }
    }

    static func readAll(_ spill: SealedSpill, step: Int = 10_000) throws -> [UInt8] {
        let reader = try spill.reader()
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: step)
        while true {
            let n = try buffer.withUnsafeMutableBytes { try reader.readFully(into: $0) }
            out += buffer[0..<n]
            if n < step { return out }
        }
    }

    static func fill(_ spill: SealedSpill, _ bytes: [UInt8], pieces: Int = 7) throws {
        let step = max(1, bytes.count / pieces)
        var at = 0
        while at < bytes.count {
            let n = min(step, bytes.count - at)
            try bytes.withUnsafeBytes { try spill.append(UnsafeRawBufferPointer(rebasing: $0[at..<at + n])) }
            at += n
        }
        try spill.finish()
    }

    @Test(arguments: [0, 1, 65_535, 65_536, 65_537, 3 * 65_536, 1_000_003])
    func aSpillReadsBackWhatWasAppendedAsOftenAsNeeded(size: Int) throws {
        let dir = TempDir("medvault-spill")
        let spill = try SealedSpill(directory: dir.path)
        let clear = Self.pattern(size)
        try Self.fill(spill, clear)
        #expect(spill.size == Int64(size))
        #expect(try Self.readAll(spill) == clear)
        #expect(try Self.readAll(spill, step: 65_536) == clear)  // a second pass
        // Unnamed: nothing to list, open or leave behind; the sealed bytes hold no clear run.
        #expect(FileIO.list(dir.path).isEmpty)
        let sealed = try Self.sealedBytes(spill)
        #expect(sealed.count == 24 + max(1, (size + 65_535) / 65_536) * 17 + size)  // the last chunk, even a full one, is FINAL
        if size >= 8 { #expect(!sealed.contains(subsequence: Array("MVCLEAR!".utf8))) }
    }

    static func sealedBytes(_ spill: SealedSpill) throws -> [UInt8] {
        let size = Int(try spill.file.size())
        var out = [UInt8](repeating: 0, count: size)
        let n = try out.withUnsafeMutableBytes { try spill.file.readFully(at: 0, into: $0) }
        return Array(out[0..<n])
    }

    @Test func aDamagedTruncatedOrExtendedSpillIsRefusedOnEveryPass() throws {
        let dir = TempDir("medvault-spill-damage")
        let clear = Self.pattern(200_000)
        for damage in ["flip", "truncate", "append", "drop-final"] {
            let spill = try SealedSpill(directory: dir.path)
            try Self.fill(spill, clear)
            let size = try spill.file.size()
            switch damage {
            case "flip": try spill.file.writeAll([0x5A], at: 70_000)
            case "truncate": #expect(ftruncate(spill.file.fd, off_t(size - 1)) == 0)
            case "append": try spill.file.writeAll([0], at: size)
            default: #expect(ftruncate(spill.file.fd, off_t(24 + 3 * 65_553)) == 0)  // whole chunks, no FINAL
            }
            #expect(throws: IOFailure.self, "\(damage)") { _ = try Self.readAll(spill) }
        }
    }

    /// A CT series of `slices` files and their bytes.
    static func series(_ dir: TempDir, patient: String, slices: Int = 2) -> (corpus: Corpus, files: [[UInt8]]) {
        let c = Corpus.generate(["ct-series", dir.sub("in-\(patient)"), "--slices", "\(slices)", "--size", "64", "--patient-id", patient,
                                 "--patient-name", "Spillway^Greta"])
        return (c, c.valid.map { readBytes(c.path($0)) })
    }

    static func received(_ bytes: [UInt8], vault: Vault, memoryLimit: Int64) throws -> IncomingInstance {
        let instance = try IncomingInstance(maxBytes: 1 << 30, memoryLimit: memoryLimit, spillingInto: vault)
        var at = 0
        while at < bytes.count {
            let n = min(4096, bytes.count - at)
            try bytes.withUnsafeBytes { try instance.append(UnsafeRawBufferPointer(rebasing: $0[at..<at + n])) }
            at += n
        }
        try instance.finish()
        return instance
    }

    @Test(arguments: [Int.max, 6000])  // read whole after the spill, or in two passes (pre-scan, then up to Pixel Data)
    func instancesPastTheMemoryLimitAreImportedByteForByteAndNothingClearIsLeft(headerLimit: Int) throws {
        let dir = TempDir("medvault-received")
        let vault = try makeVault(dir).vault
        let (corpus, files) = Self.series(dir, patient: "SPILL-\(headerLimit == 6000 ? 2 : 1)")
        // The first stays in memory; the second outgrows a 4 KiB limit and is sealed on disk.
        let kept = try Self.received(files[0], vault: vault, memoryLimit: 1 << 30)
        let spilled = try Self.received(files[1], vault: vault, memoryLimit: 4096)
        #expect(!kept.isSealedOnDisk && spilled.isSealedOnDisk && spilled.memoryBytes == 0)
        #expect(FileIO.list(vault.layout.tmp).isEmpty)
        var options = ImportOptions()
        options.streamHeaderLimit = headerLimit
        let summary = try vault.importIncoming([kept, spilled], options: options, by: .currentProcess)
        #expect(summary.results.map(\.outcome) == [.imported, .imported])
        for (f, original) in zip(corpus.valid, files) {
            let sop = try #require(f.sop_uid)
            let item = try #require(try vault.resolve(.instance(sop)).first)
            var out: [UInt8] = []
            try vault.readInstance(item) { out += $0 }
            #expect(out == original)
        }
        #expect(try vault.verify().ok)
        // The same instance again, sealed on disk: already present (its fingerprint read through the spill).
        let again = try Self.received(files[1], vault: vault, memoryLimit: 0)
        #expect(try vault.importIncoming([again], options: options, by: .currentProcess).results.map(\.outcome) == [.alreadyPresent])
        #expect(allFiles(under: vault.layout.root).allSatisfy { !fileContains($0, Array("Spillway".utf8)) })
        #expect(FileIO.list(vault.layout.tmp).isEmpty)
    }

    @Test func aMalformedOrDamagedInstanceSealedOnDiskChangesNothing() throws {
        let dir = TempDir("medvault-received-bad")
        let vault = try makeVault(dir).vault
        let (_, files) = Self.series(dir, patient: "SPILL-3", slices: 1)
        var options = ImportOptions()
        options.streamHeaderLimit = 1024
        let before = blobFiles(vault).count
        // Cut inside its pixel data: the pre-scan pass refuses it.
        let cut = try Self.received(Array(files[0].dropLast(100)), vault: vault, memoryLimit: 0)
        // Not DICOM at all.
        let junk = try Self.received(Self.pattern(300_000), vault: vault, memoryLimit: 0)
        // Sealed, then altered on disk before the import: its authentication fails.
        let altered = try Self.received(files[0], vault: vault, memoryLimit: 0)
        try #require(altered.spill).file.writeAll([0xFF, 0xFF], at: 2_000)
        let results = try vault.importIncoming([cut, junk, altered], options: options, by: .currentProcess).results
        guard case .rejected(let r0) = results[0].outcome, case .rejected(let r1) = results[1].outcome, case .failed(let r2) = results[2].outcome else {
            Issue.record("unexpected outcomes: \(results.map(\.outcome))")
            return
        }
        #expect(r0.contains("past the end") || r0.contains("truncated") || r0.contains("length"), "\(r0)")
        #expect(r1.contains("not a DICOM file"), "\(r1)")
        #expect(r2.contains("authenticate"), "\(r2)")
        #expect(blobFiles(vault).count == before)
        #expect(try vault.verify().ok)
        #expect(FileIO.list(vault.layout.tmp).isEmpty)
    }
}

extension Array where Element == UInt8 {
    func contains(subsequence needle: [UInt8]) -> Bool {
        guard !needle.isEmpty, count >= needle.count else { return false }
        return (0...(count - needle.count)).contains { i in self[i..<i + needle.count].elementsEqual(needle) }
    }
}
