// Parsing an instance that can only be read in order, never whole (a received instance sealed on
// arrival): the same answers as parsing the file, for every file of the corpus and of the pixel
// corpus, valid or malformed, with the two-pass path forced by a small header limit.
import Foundation
import Testing
import TestSupport
@testable import VaultDICOM

@Suite struct StreamParseTests {
    /// `open()` for `bytes`: each pass reads from the first byte, at most `step` bytes per call.
    static func opener(_ bytes: [UInt8], step: Int = 1000, passes: Counter? = nil) -> () throws -> DICOMParser.ReadFunction {
        {
            passes?.value += 1
            var offset = 0
            return { buffer in
                let n = min(buffer.count, step, bytes.count - offset)
                guard n > 0 else { return 0 }
                bytes.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n]).copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[offset..<offset + n])) }
                offset += n
                return n
            }
        }
    }

    final class Counter: @unchecked Sendable { var value = 0 }

    static func bytes(_ path: String) throws -> [UInt8] { Array(try Data(contentsOf: URL(fileURLWithPath: path))) }

    /// The streamed parse (forced through the pre-scan and the parse up to Pixel Data) against the file's.
    /// Returns whether both parsed (and agreed).
    @discardableResult
    static func compare(_ path: String) throws -> Bool {
        let bytes = try bytes(path)
        let whole = Result { () throws(DICOMError) in try DICOMParser.parse(path: path) }
        let passes = Counter()
        let streamed = Result { () throws(DICOMError) in
            try DICOMParser.parse(size: Int64(bytes.count), headerLimit: max(1, bytes.count - 1), open: opener(bytes, passes: passes))
        }
        switch (whole, streamed) {
        case (.success(let a), .success(let b)):
            #expect(a == b, "\(path)")
            #expect(passes.value == 2, "\(path): one pre-scan pass and one parse pass")
            return a == b
        case (.failure, .failure):
            break  // both refuse
        case (.success, .failure(let e)):
            // Only an instance without Pixel Data cannot be parsed from its first bytes.
            guard case .unsupported(let m) = e else {
                Issue.record("\(path): the file parses, the stream does not: \(e)")
                return false
            }
            #expect(m.contains("before Pixel Data"), "\(path): \(m)")
        case (.failure(let e), .success):
            Issue.record("\(path): the stream parses a file that is refused: \(e)")
        }
        return false
    }

    @Test func everyCorpusFileParsesAsAStreamAsItDoesAsAFile() throws {
        let corpus = Corpus.shared
        #expect(corpus.valid.count >= 30 && corpus.malformed.count >= 5)
        var agreed = 0
        for f in corpus.files where f.size.map({ $0 > 1 }) ?? true {
            if try Self.compare(corpus.path(f)) { agreed += 1 }
        }
        #expect(agreed >= 25, "files parsed both ways with the same header: \(agreed)")
    }

    @Test func everyPixelLayoutAndCodecParsesAsAStream() throws {
        #expect(PixelCorpus.files.contains { $0.encapsulated })
        var agreed = 0
        defer { #expect(agreed >= PixelCorpus.valid.count, "\(agreed) of \(PixelCorpus.valid.count)") }
        for f in PixelCorpus.files {
            if try Self.compare(PixelCorpus.root + "/" + f.path) { agreed += 1 }
            // Each one with pixel data parses from its first bytes, without the whole file in memory.
            let bytes = try PixelCorpus.bytes(f.path)
            if f.reason == nil {
                let h = try DICOMParser.parse(size: Int64(bytes.count), headerLimit: bytes.count - 1, open: Self.opener(bytes))
                #expect(h.transferSyntaxUID == f.transfer_syntax, "\(f.path)")
            }
        }
    }

    /// Every input the fuzzer kept (tools/fuzz-harness/regressions), read in pieces of several sizes:
    /// the streamed parse agrees with the file's whatever the pieces (a deflated one once did not).
    @Test(arguments: [1, 777, 4096, 65_536])
    func fuzzerRegressionsParseAlikeWhateverTheReadSize(step: Int) throws {
        let dir = packageRoot + "/tools/fuzz-harness/regressions"
        let files = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".dcm") }
        #expect(files.contains("deflate-output-held-back-at-end-of-input.dcm"))
        for name in files {
            let bytes = try Self.bytes(dir + "/" + name)
            let file = Result { () throws(DICOMError) in try DICOMParser.parse(path: dir + "/" + name) }
            let streamed = Result { () throws(DICOMError) in
                try DICOMParser.parse(size: Int64(bytes.count), headerLimit: max(1, bytes.count - 1), open: Self.opener(bytes, step: step))
            }
            switch (file, streamed) {
            case (.success(let a), .success(let b)): #expect(a == b, "\(name)")
            case (.failure, .failure): break
            case (.success, .failure(let e)):
                if case .unsupported = e { break }  // no Pixel Data: cannot be parsed from its first bytes
                Issue.record("\(name), \(step)-byte reads: the file parses, the stream does not: \(e)")
            case (.failure(let e), .success): Issue.record("\(name), \(step)-byte reads: the stream parses a refused file (\(e))")
            }
        }
    }

    @Test func aSmallInstanceIsReadOnceAndParsedWhole() throws {
        let f = try #require(Corpus.shared.valid.first)
        let bytes = try Self.bytes(Corpus.shared.path(f))
        let passes = Counter()
        let h = try DICOMParser.parse(size: Int64(bytes.count), open: Self.opener(bytes, passes: passes))
        #expect(h == (try DICOMParser.parse(path: Corpus.shared.path(f))))
        #expect(passes.value == 1)
    }

    @Test func damageAfterTheHeaderIsFoundByThePrescanPass() throws {
        // An encapsulated file whose last fragment's length runs past the end: the attributes before
        // Pixel Data are intact, but the whole-structure pass refuses it, as parsing the file does.
        let f = try #require(PixelCorpus.valid.first { $0.encapsulated && $0.frames > 1 })
        var bytes = try PixelCorpus.bytes(f.path)
        bytes.removeLast(3)
        #expect(throws: DICOMError.self) { try DICOMParser.parse(bytes: bytes) }
        let e = #expect(throws: DICOMError.self) {
            try DICOMParser.parse(size: Int64(bytes.count), headerLimit: 1024, open: Self.opener(bytes))
        }
        guard case .malformed = e else {
            Issue.record("expected a malformed-file refusal, got \(String(describing: e))")
            return
        }
    }

    @Test func attributesBeforePixelDataLargerThanTheLimitAreRefusedWithTheReason() throws {
        let f = try #require(PixelCorpus.valid.first { !$0.encapsulated })
        let bytes = try PixelCorpus.bytes(f.path)
        let e = #expect(throws: DICOMError.self) {
            try DICOMParser.parse(size: Int64(bytes.count), headerLimit: 64, open: Self.opener(bytes))
        }
        guard case .unsupported(let message) = e else {
            Issue.record("expected .unsupported, got \(String(describing: e))")
            return
        }
        #expect(message.contains("before Pixel Data (7FE0,0010)"))
    }

    @Test func aReaderThatFailsIsReportedAsUnreadable() throws {
        struct Broken: Error {}
        let e = #expect(throws: DICOMError.self) {
            try DICOMParser.parse(size: 1 << 30, headerLimit: 1024) { { _ in throw Broken() } }
        }
        guard case .unreadable(let message) = e else {
            Issue.record("expected .unreadable, got \(String(describing: e))")
            return
        }
        #expect(message.contains("cannot read the instance"))
    }
}
