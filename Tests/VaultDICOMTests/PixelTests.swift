import Foundation
import Testing
import TestSupport
@testable import VaultDICOM

/// One file of `tools/gen-dicom.py pixels`: its layout and the pixels it was written with (`raw`).
struct PixelFile: Decodable, Sendable {
    let path: String
    let raw: String
    let transfer_syntax: String
    let frames: Int
    let rows: Int
    let columns: Int
    let samples: Int
    let bits_allocated: Int
    let bits_stored: Int
    let photometric: String
    let lossy: Bool
    let encapsulated: Bool
    let bot: Bool
    let eot: Bool
    let reason: String?
}

/// The pixel corpus, generated once per test process (pydicom, DCMTK's encoders, Pillow for JPEG 2000).
enum PixelCorpus {
    struct Manifest: Decodable { let files: [PixelFile] }
    static let root: String = {
        let dir = TempDir("medvault-pixels")
        guard let r = try? run("/usr/bin/env", ["python3", packageRoot + "/tools/gen-dicom.py", "pixels", dir.path]), r.status == 0 else {
            fatalError("tools/gen-dicom.py pixels failed; run tools/setup")
        }
        return dir.path
    }()
    static let files: [PixelFile] = {
        guard let data = FileManager.default.contents(atPath: root + "/pixels.json"),
            let m = try? JSONDecoder().decode(Manifest.self, from: data)
        else { fatalError("no pixels.json") }
        return m.files
    }()
    static var valid: [PixelFile] { files.filter { $0.reason == nil } }
    static func file(_ path: String) throws -> PixelFile { try #require(files.first { $0.path == path }) }
    static func bytes(_ path: String) throws -> [UInt8] {
        Array(try #require(FileManager.default.contents(atPath: root + "/" + path)))
    }
}

/// What Pillow (independent of DCMTK) reads in an encoded image: format, size, and one row's pixels.
struct DecodedImage: Decodable {
    let format: String
    let mode: String
    let width: Int
    let height: Int
    /// The middle row, one array of channel values per pixel.
    let row: [[Int]]
    /// The middle column.
    let column: [[Int]]

    static let script = """
        import sys, json
        from PIL import Image
        im = Image.open(sys.argv[1]); im.load()
        w, h = im.size
        px = lambda v: list(v) if isinstance(v, tuple) else [v]
        print(json.dumps({"format": im.format, "mode": im.mode, "width": w, "height": h,
            "row": [px(im.getpixel((x, h // 2))) for x in range(w)],
            "column": [px(im.getpixel((w // 2, y))) for y in range(h)]}))
        """

    static func of(_ encoded: [UInt8]) throws -> DecodedImage {
        let dir = TempDir("medvault-render")
        defer { dir.remove() }
        let path = dir.sub("image")
        try Data(encoded).write(to: URL(fileURLWithPath: path))
        let r = try run("/usr/bin/env", ["python3", "-c", script, path])
        guard r.status == 0 else {
            Issue.record("Pillow could not read the image: \(r.stderr)")
            throw DICOMError.internalFailure("Pillow")
        }
        return try JSONDecoder().decode(DecodedImage.self, from: Data(r.stdout.utf8))
    }
}

func isNonDecreasing(_ v: [Int]) -> Bool { zip(v, v.dropFirst()).allSatisfy { $0 <= $1 } }

@Suite struct PixelLayoutTests {
    @Test func everyFileHasTheLayoutItWasWrittenWith() throws {
        #expect(PixelCorpus.valid.count >= 18)
        for f in PixelCorpus.valid {
            let l = try DICOMPixelLayout.read(try PixelCorpus.bytes(f.path))
            #expect(l.transferSyntaxUID == f.transfer_syntax, "\(f.path)")
            #expect(l.numberOfFrames == f.frames, "\(f.path)")
            #expect(l.rows == f.rows && l.columns == f.columns && l.samplesPerPixel == f.samples, "\(f.path)")
            #expect(l.bitsAllocated == f.bits_allocated && l.bitsStored == f.bits_stored, "\(f.path)")
            #expect(l.highBit == f.bits_stored - 1 && l.pixelRepresentation == 0, "\(f.path)")
            #expect(l.isEncapsulated == f.encapsulated, "\(f.path)")
            #expect((l.valueLength == nil) == f.encapsulated, "\(f.path)")
            #expect(l.frameSize == f.rows * f.columns * f.samples * f.bits_allocated / 8, "\(f.path)")
            #expect((l.extendedOffsetTable != nil) == f.eot, "\(f.path)")
            if !f.lossy || f.samples == 1 { #expect(l.photometricInterpretation == f.photometric || f.path.contains("baseline-rgb"), "\(f.path)") }
        }
        let ybr = try DICOMPixelLayout.read(try PixelCorpus.bytes("jpeg/baseline-rgb-3-frames.dcm"))
        #expect(ybr.photometricInterpretation == "YBR_FULL_422")
    }

    @Test func nativeFrameRangesHoldExactlyTheGeneratedPixels() throws {
        for f in PixelCorpus.valid where !f.encapsulated && !f.transfer_syntax.hasSuffix(".2.2") {
            let bytes = try PixelCorpus.bytes(f.path)
            let raw = try PixelCorpus.bytes(f.raw)
            let l = try DICOMPixelLayout.read(bytes)
            for k in 0..<f.frames {
                let r = try l.nativeFrameRange(k)
                #expect(r.count == l.frameSize)
                #expect(Array(bytes[Int(r.lowerBound)..<Int(r.upperBound)]) == Array(raw[(k * l.frameSize)..<((k + 1) * l.frameSize)]), "\(f.path) frame \(k)")
                #expect(try l.storedFrame(k, in: bytes) == Array(raw[(k * l.frameSize)..<((k + 1) * l.frameSize)]))
            }
        }
    }

    @Test func theStreamMayStopRightAfterThePixelDataHeader() throws {
        for path in ["native/mono16-5-frames.dcm", "native/mono8-odd-3-frames-implicit.dcm", "rle/mono16-5-frames-eot.dcm", "jpeg/lossless-mono16-5-frames.dcm"] {
            let bytes = try PixelCorpus.bytes(path)
            let whole = try DICOMPixelLayout.read(bytes)
            #expect(try DICOMPixelLayout.read(Array(bytes.prefix(Int(whole.valueOffset)))) == whole, "\(path)")
            #expect(try DICOMPixelLayout.read(Array(bytes.prefix(Int(whole.valueOffset) + 3))) == whole, "\(path)")
            // Cut inside the element header: refused, not guessed.
            #expect(throws: DICOMError.self) { try DICOMPixelLayout.read(Array(bytes.prefix(Int(whole.valueOffset) - 2))) }
        }
        // No Pixel Data at all (cut before its tag).
        let bytes = try PixelCorpus.bytes("native/mono16.dcm")
        let l = try DICOMPixelLayout.read(bytes)
        #expect {
            try DICOMPixelLayout.read(Array(bytes.prefix(Int(l.valueOffset) - 12)))
        } throws: { error in
            if case .noPixelData = error as? DICOMError { return true }
            return false
        }
    }

    @Test func encapsulatedFramesAreFoundWithAndWithoutOffsetTables() throws {
        // Same pixels, four ways to find frames: BOT, no BOT (one fragment a frame), EOT, several fragments a frame.
        let raw = try PixelCorpus.bytes("native/mono16-5-frames.dcm.raw")
        for path in ["jpeg/lossless-mono16-5-frames.dcm", "jpeg/lossless-sv1-mono16-5-frames-no-bot.dcm", "rle/mono16-5-frames-eot.dcm", "rle/mono16-5-frames-no-bot.dcm"] {
            let bytes = try PixelCorpus.bytes(path)
            let l = try DICOMPixelLayout.read(bytes)
            for k in 0..<5 {
                let frame = try DICOMPixels.decodeFrame(try l.storedFrame(k, in: bytes), layout: l)
                #expect(frame.bytes == Array(raw[(k * l.frameSize)..<((k + 1) * l.frameSize)]), "\(path) frame \(k)")
            }
        }
        let eot = try DICOMPixelLayout.read(try PixelCorpus.bytes("rle/mono16-5-frames-eot.dcm"))
        #expect(eot.extendedOffsetTable?.count == 5 && eot.extendedOffsetTable?.first == 0)
        // Several fragments a frame: the BOT, and without it the JPEG start-of-image markers, give the same frames.
        let withBOT = try PixelCorpus.bytes("jpeg/lossless-sv1-mono16-3-frames-fragmented.dcm")
        let withoutBOT = try PixelCorpus.bytes("jpeg/lossless-sv1-mono16-3-frames-fragmented-no-bot.dcm")
        let a = try DICOMPixelLayout.read(withBOT), b = try DICOMPixelLayout.read(withoutBOT)
        let noisy = try PixelCorpus.bytes("jpeg/lossless-sv1-mono16-3-frames-fragmented.dcm.raw")
        for k in 0..<3 {
            let ranges = try a.fragmentRanges(ofFrame: k) { at, n in Array(withBOT[Int(at)..<min(withBOT.count, Int(at) + n)]) }
            #expect(ranges.count > 1, "frame \(k) spans several fragments")
            #expect(try a.storedFrame(k, in: withBOT) == b.storedFrame(k, in: withoutBOT))
            let decoded = try DICOMPixels.decodeFrame(try a.storedFrame(k, in: withBOT), layout: a)
            #expect(decoded.bytes == Array(noisy[(k * a.frameSize)..<((k + 1) * a.frameSize)]))
        }
    }

    @Test func locatingAFrameReadsOnlyItemHeadersAndOffsetTableEntries() throws {
        let bytes = try PixelCorpus.bytes("jpeg/lossless-sv1-mono16-3-frames-fragmented.dcm")
        let l = try DICOMPixelLayout.read(Array(bytes.prefix(Int(try DICOMPixelLayout.read(bytes).valueOffset))))
        var reads: [(UInt64, Int)] = []
        let ranges = try l.fragmentRanges(ofFrame: 2) { at, n in
            reads.append((at, n))
            return Array(bytes[Int(at)..<min(bytes.count, Int(at) + n)])
        }
        #expect(reads.allSatisfy { $0.1 <= 8 }, "\(reads)")
        #expect(reads.count <= 2 + ranges.count + 1)
        #expect(ranges.allSatisfy { $0.upperBound <= UInt64(bytes.count) })
    }

    @Test func aFrameIndexPastTheEndIsRefused() throws {
        let bytes = try PixelCorpus.bytes("native/mono16-5-frames.dcm")
        let l = try DICOMPixelLayout.read(bytes)
        #expect(throws: DICOMError.frameOutOfRange(requested: 5, available: 5)) { try l.nativeFrameRange(5) }
        #expect(throws: DICOMError.frameOutOfRange(requested: -1, available: 5)) { try l.storedFrame(-1, in: bytes) }
        let jpeg = try PixelCorpus.bytes("jpeg/lossless-mono16-5-frames.dcm")
        let j = try DICOMPixelLayout.read(jpeg)
        #expect(throws: DICOMError.frameOutOfRange(requested: 7, available: 5)) { try j.storedFrame(7, in: jpeg) }
        #expect(DICOMError.frameOutOfRange(requested: 7, available: 5).description.contains("5 frame(s)"))
    }

    @Test func hostilePixelHeadersAreRefusedWithoutAllocatingWhatTheyClaim() throws {
        for f in PixelCorpus.files where f.reason != nil {
            let reason = try #require(f.reason)
            let bytes = try PixelCorpus.bytes(f.path)
            do {
                let l = try DICOMPixelLayout.read(bytes)
                for k in 0..<l.numberOfFrames { _ = try l.storedFrame(k, in: bytes) }
                Issue.record("\(f.path) was accepted")
            } catch {
                guard case .malformed(let m) = error else { Issue.record("\(f.path): \(error)"); continue }
                #expect(m.contains(reason), "\(f.path): \(m)")
            }
        }
        // A compressed frame whose header claims 65535 x 65535 RGB 16-bit (25 GB): refused before decoding.
        let bytes = try PixelCorpus.bytes("rle/mono16-5-frames-no-bot.dcm")
        let l = try DICOMPixelLayout.read(bytes)
        let huge = DICOMPixelLayout(
            valueOffset: l.valueOffset, valueLength: nil, transferSyntaxUID: l.transferSyntaxUID, isEncapsulated: true,
            isBigEndian: false, numberOfFrames: 1, rows: 65535, columns: 65535, samplesPerPixel: 3, bitsAllocated: 16,
            bitsStored: 16, highBit: 15, pixelRepresentation: 0, photometricInterpretation: "RGB", planarConfiguration: 0,
            frameSize: 65535 * 65535 * 6, extendedOffsetTable: nil, extendedOffsetTableLengths: nil)
        #expect {
            try DICOMPixels.decodeFrame(try l.storedFrame(0, in: bytes), layout: huge, maxFrameBytes: 64 << 20)
        } throws: { error in
            guard case .malformed(let m) = error as? DICOMError else { return false }
            return m.contains("exceeds the limit")
        }
        // The parser's hostile corpus is refused here too, for the same reasons.
        for f in ParserLimitsTests.hostile.malformed {
            let data = Array(try #require(FileManager.default.contents(atPath: ParserLimitsTests.hostile.path(f))))
            #expect {
                try DICOMPixelLayout.read(data)
            } throws: { error in
                guard case .malformed(let m) = error as? DICOMError else { return false }
                return m.contains(f.reason ?? "?")
            }
        }
    }
}

@Suite struct FrameDecodingTests {
    @Test(arguments: PixelCorpus.valid.filter { DICOMPixels.canDecode(transferSyntax: $0.transfer_syntax) })
    func everyFrameDecodesToTheGeneratorsPixels(_ f: PixelFile) throws {
        let bytes = try PixelCorpus.bytes(f.path)
        let raw = try PixelCorpus.bytes(f.raw)
        let l = try DICOMPixelLayout.read(bytes)
        for k in 0..<f.frames {
            let decoded = try DICOMPixels.decodeFrame(try l.storedFrame(k, in: bytes), layout: l)
            let expected = Array(raw[(k * l.frameSize)..<((k + 1) * l.frameSize)])
            #expect(decoded.bytes.count == expected.count, "\(f.path) frame \(k)")
            #expect(decoded.planarConfiguration == 0, "\(f.path)")
            if f.samples == 3 { #expect(decoded.photometricInterpretation == "RGB", "\(f.path)") }
            if !f.lossy {
                #expect(decoded.bytes == expected, "\(f.path) frame \(k)")
                continue
            }
            // Lossy: close to the original, sample by sample.
            let got = samples(decoded.bytes, bits: f.bits_allocated), want = samples(expected, bits: f.bits_allocated)
            let diffs = zip(got, want).map { abs($0 - $1) }
            let mean = Double(diffs.reduce(0, +)) / Double(max(diffs.count, 1))
            let range = Double((1 << f.bits_stored) - 1)
            if f.transfer_syntax.hasSuffix(".81") {
                #expect(diffs.max() ?? 0 <= 2, "near-lossless NEAR=2: \(f.path)")
            } else {
                #expect(mean <= range * 0.01, "\(f.path) frame \(k): mean error \(mean)")
            }
        }
    }

    func samples(_ b: [UInt8], bits: Int) -> [Int] {
        bits == 8 ? b.map(Int.init) : stride(from: 0, to: b.count - 1, by: 2).map { Int(b[$0]) | Int(b[$0 + 1]) << 8 }
    }

    @Test func bigEndianWordsAreSwapped() throws {
        let bytes = try PixelCorpus.bytes("native/mono16-5-frames-big-endian.dcm")
        let raw = try PixelCorpus.bytes("native/mono16-5-frames-big-endian.dcm.raw")
        let l = try DICOMPixelLayout.read(bytes)
        #expect(l.isBigEndian)
        let frame = try DICOMPixels.decodeFrame(try l.storedFrame(3, in: bytes), layout: l)
        #expect(frame.bytes == Array(raw[(3 * l.frameSize)..<(4 * l.frameSize)]))
    }

    @Test func jpeg2000IsATypedUnsupportedSyntax() throws {
        let f = try PixelCorpus.file("jpeg2000/mono8.dcm")
        let bytes = try PixelCorpus.bytes(f.path)
        let l = try DICOMPixelLayout.read(bytes)
        #expect(!l.canDecode)
        #expect(DICOMPixels.canDecode(transferSyntax: "1.2.840.10008.1.2.4.70"))
        #expect(throws: DICOMError.unsupportedTransferSyntax("1.2.840.10008.1.2.4.90")) {
            try DICOMPixels.decodeFrame(try l.storedFrame(0, in: bytes), layout: l)
        }
        #expect(throws: DICOMError.unsupportedTransferSyntax("1.2.840.10008.1.2.4.90")) {
            try DICOMPixels.render(header: bytes, frame: try l.storedFrame(0, in: bytes), options: DICOMRenderOptions())
        }
    }

    /// tools/fuzz found that dcmjpeg 3.6.7 loops forever on a TEM marker before the frame header.
    @Test func fuzzerRegressionsAreHandledByThePixelEntryPoints() throws {
        let l = try DICOMPixelLayout.read(try PixelCorpus.bytes("jpeg/lossless-mono16-5-frames.dcm"))
        #expect {
            try DICOMPixels.decodeFrame([0xFF, 0xD8, 0xFF, 0xFF, 0xFF, 0x01, 0x00, 0x01, 0x00, 0x00, 0xFF, 0xC3], layout: l)
        } throws: { error in
            guard case .malformed(let m) = error as? DICOMError else { return false }
            return m.contains("TEM marker")
        }
        let dir = packageRoot + "/tools/fuzz-harness/regressions"
        // Photometric Interpretation that starts with a NUL: read as empty, so MONOCHROME2 for one sample,
        // never a layout (and a decoded frame) with no photometric interpretation.
        let nuls = Array(try #require(FileManager.default.contents(atPath: dir + "/photometric-with-nuls.dcm")))
        #expect(try DICOMPixelLayout.read(nuls).photometricInterpretation == "MONOCHROME2")
        // One with a character a code string cannot hold is refused.
        var bad = nuls
        let photometricTag: [UInt8] = [0x28, 0x00, 0x04, 0x00]
        let candidates = 0..<(bad.count - 12)
        let at = try #require(candidates.first { Array(bad[$0..<($0 + 4)]) == photometricTag })
        bad[at + 8] = UInt8(ascii: "M"); bad[at + 9] = UInt8(ascii: "o")
        #expect {
            _ = try DICOMPixelLayout.read(bad)
        } throws: { error in
            "\(error)".contains("Photometric Interpretation (0028,0004) is not a code string")
        }
        for name in try FileManager.default.contentsOfDirectory(atPath: dir) where name.hasSuffix(".dcm") {
            let data = Array(try #require(FileManager.default.contents(atPath: dir + "/" + name)))
            guard let layout = try? DICOMPixelLayout.read(data) else { continue }
            for k in 0..<min(layout.numberOfFrames, 4) {
                guard let frame = try? layout.storedFrame(k, in: data) else { continue }
                _ = try? DICOMPixels.decodeFrame(frame, layout: layout, maxFrameBytes: 1 << 20)
                _ = try? DICOMPixels.render(header: data, frame: frame, options: DICOMRenderOptions(maxFrameBytes: 1 << 20))
            }
        }
    }

    /// dcmdata 3.6.7's RLE decoder reads where the frame's RLE header points: the shim checks it first.
    @Test func rleHeadersThatPointOutsideTheFrameAreRefused() throws {
        let bytes = try PixelCorpus.bytes("rle/mono16-5-frames-no-bot.dcm")
        let l = try DICOMPixelLayout.read(bytes)
        let frame = try l.storedFrame(1, in: bytes)
        var past = frame
        past[8] = 0xFF; past[9] = 0xFF; past[10] = 0xFF; past[11] = 0x7F  // segment 2 at 2 GiB
        var segments = frame
        segments[0] = 3  // 3 segments for 16-bit mono (2 expected)
        for bad in [past, segments, Array(frame.prefix(40))] {
            #expect {
                try DICOMPixels.decodeFrame(bad, layout: l)
            } throws: { error in
                guard case .malformed(let m) = error as? DICOMError else { return false }
                return m.hasPrefix("cannot decode the RLE frame")
            }
        }
    }

    /// AddressSanitizer does not see inside Debian's DCMTK, so the fuzzer misses its over-reads: every
    /// codec's frames, damaged byte by byte (deterministically), must decode or fail, never crash.
    @Test func damagedFramesOfEveryCodecNeverCrash() throws {
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> Int {  // SplitMix64
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return Int(truncatingIfNeeded: (z ^ (z >> 31)) >> 1)
        }
        var decoded = 0, refused = 0
        for f in PixelCorpus.valid where f.encapsulated && DICOMPixels.canDecode(transferSyntax: f.transfer_syntax) {
            let bytes = try PixelCorpus.bytes(f.path)
            let l = try DICOMPixelLayout.read(bytes)
            let header = Array(bytes.prefix(Int(l.valueOffset)))
            let frame = try l.storedFrame(0, in: bytes)
            for round in 0..<1000 {
                var damaged = frame
                for _ in 0...(next() % 4) {
                    let i = next() % damaged.count
                    damaged[i] = UInt8(truncatingIfNeeded: next())
                }
                if round % 5 == 0 { damaged = Array(damaged.prefix(1 + next() % damaged.count)) }
                if (try? DICOMPixels.decodeFrame(damaged, layout: l, maxFrameBytes: 1 << 20)) != nil { decoded += 1 } else { refused += 1 }
                if round % 10 == 0 {
                    _ = try? DICOMPixels.render(header: header, frame: damaged, options: DICOMRenderOptions(format: .png, maxFrameBytes: 1 << 20))
                }
            }
        }
        #expect(decoded + refused >= 10000)
    }

    @Test func corruptCompressedFramesFailCleanly() throws {
        for path in ["jpeg/lossless-mono16-5-frames.dcm", "jpeg-ls/lossless-mono16-5-frames.dcm", "rle/mono16-5-frames-no-bot.dcm", "jpeg/baseline-mono8-3-frames.dcm"] {
            let bytes = try PixelCorpus.bytes(path)
            let l = try DICOMPixelLayout.read(bytes)
            let frame = try l.storedFrame(0, in: bytes)
            for cut in [frame.prefix(frame.count / 2), frame.prefix(3), ArraySlice(frame.reversed())] {
                do {
                    _ = try DICOMPixels.decodeFrame(Array(cut), layout: l)
                } catch {
                    guard case .malformed = error else { Issue.record("\(path): \(error)"); continue }
                }
            }
        }
    }
}

@Suite struct RenderingTests {
    func render(_ path: String, frame k: Int = 0, _ options: DICOMRenderOptions) throws -> (DecodedImage, [UInt8]) {
        let bytes = try PixelCorpus.bytes(path)
        let l = try DICOMPixelLayout.read(bytes)
        // One frame is enough: the header up to the Pixel Data value, and that frame.
        let header = Array(bytes.prefix(Int(l.valueOffset)))
        let encoded = try DICOMPixels.render(header: header, frame: try l.storedFrame(k, in: bytes), options: options)
        return (try DecodedImage.of(encoded), encoded)
    }

    @Test func monochrome16BitWithAWindowToJPEGAndPNG() throws {
        for format in [DICOMRenderOptions.Format.jpeg(quality: 95), .png] {
            let (img, encoded) = try render("native/mono16.dcm", DICOMRenderOptions(format: format, window: DICOMWindow(center: 2000, width: 4000)))
            #expect(img.format == (format == .png ? "PNG" : "JPEG"))
            #expect(img.mode == "L" && img.width == 64 && img.height == 48)
            let row = img.row.map { $0[0] }
            if format == .png {
                #expect(encoded.prefix(8) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
                #expect(isNonDecreasing(row), "\(row)")
            }
            #expect(row.last! - row.first! > 150, "the gradient spans the window: \(row)")
        }
    }

    @Test func theWindowDecidesWhichValuesAreBlackAndWhite() throws {
        // Values run 24..3804 along a row (60 a column, +24 on the middle row); a narrow window at 1000.
        let (narrow, _) = try render("native/mono16.dcm", DICOMRenderOptions(format: .png, window: DICOMWindow(center: 1000, width: 2)))
        let row = narrow.row.map { $0[0] }
        #expect(isNonDecreasing(row))
        #expect(row.prefix(16).allSatisfy { $0 == 0 } && row.suffix(46).allSatisfy { $0 == 255 }, "\(row)")
        // The file's own window (2000/4000) when none is given; LINEAR_EXACT and SIGMOID also render.
        let (own, _) = try render("native/mono16.dcm", DICOMRenderOptions(format: .png))
        let (given, _) = try render("native/mono16.dcm", DICOMRenderOptions(format: .png, window: DICOMWindow(center: 2000, width: 4000)))
        #expect(own.row == given.row)
        for function in [DICOMWindow.Function.linearExact, .sigmoid] {
            let (img, _) = try render("native/mono16.dcm", DICOMRenderOptions(format: .png, window: DICOMWindow(center: 2000, width: 4000, function: function)))
            #expect(isNonDecreasing(img.row.map { $0[0] }), "\(function)")
        }
        // Without any window in the file: min-max, over the 16-bit range of a multi-frame file's frame.
        let (minmax, _) = try render("native/mono16-5-frames.dcm", frame: 4, DICOMRenderOptions(format: .png))
        let m = minmax.row.map { $0[0] }
        #expect(isNonDecreasing(m) && m.first! < 20 && m.last! > 235, "\(m)")
        #expect(throws: DICOMError.self) {
            try render("native/mono16.dcm", DICOMRenderOptions(format: .png, window: DICOMWindow(center: 0, width: 0)))
        }
    }

    @Test func compressedFramesRenderLikeTheirNativeTwins() throws {
        let (native, _) = try render("native/mono16-5-frames.dcm", frame: 3, DICOMRenderOptions(format: .png))
        for path in ["jpeg/lossless-mono16-5-frames.dcm", "jpeg-ls/lossless-mono16-5-frames.dcm", "rle/mono16-5-frames-eot.dcm"] {
            let (img, _) = try render(path, frame: 3, DICOMRenderOptions(format: .png))
            #expect(img.row == native.row && img.column == native.column, "\(path)")
        }
    }

    @Test func colourImagesRenderInColour() throws {
        // RGB: red rises left to right, green top to bottom, blue is 40 + 60 x frame.
        for path in ["native/rgb-3-frames.dcm", "rle/rgb-3-frames.dcm", "jpeg-ls/lossless-rgb-3-frames.dcm", "jpeg/baseline-rgb-3-frames.dcm"] {
            let (img, _) = try render(path, frame: 1, DICOMRenderOptions(format: .png))
            #expect(img.mode == "RGB" && img.width == 40 && img.height == 30, "\(path)")
            let reds = img.row.map { $0[0] }, greens = img.column.map { $0[1] }
            #expect(reds.first! < 10 && reds.last! > 245, "\(path): \(reds)")
            #expect(greens.first! < 10 && greens.last! > 245, "\(path): \(greens)")
            #expect(img.row.allSatisfy { abs($0[2] - 100) <= 4 }, "\(path)")
        }
        // Palette colour: red rises with the index, green falls, no blue.
        let (palette, _) = try render("native/palette.dcm", DICOMRenderOptions(format: .png))
        #expect(palette.mode == "RGB")
        let reds = palette.row.map { $0[0] }, greens = palette.row.map { $0[1] }
        #expect(isNonDecreasing(reds) && reds.last! > reds.first! + 150)
        #expect(isNonDecreasing(greens.reversed()) && greens.first! > greens.last! + 150)
        #expect(palette.row.allSatisfy { $0[2] == 0 })
        let (jpeg, _) = try render("native/rgb-3-frames.dcm", DICOMRenderOptions(format: .jpeg(quality: 90)))
        #expect(jpeg.format == "JPEG" && jpeg.mode == "RGB")
    }

    @Test func viewportsScaleToFitKeepingTheAspectRatio() throws {
        let cases: [(DICOMViewport, Int, Int)] = [
            (DICOMViewport(width: 32, height: 32), 32, 24), (DICOMViewport(width: 100, height: 24), 32, 24),
            (DICOMViewport(width: 16, height: 0), 16, 12), (DICOMViewport(width: 128, height: 128), 128, 96),
        ]
        for (viewport, w, h) in cases {
            let (img, _) = try render("native/mono16.dcm", DICOMRenderOptions(format: .png, viewport: viewport))
            #expect(img.width == w && img.height == h, "\(viewport)")
            #expect(isNonDecreasing(img.row.map { $0[0] }))
        }
        let (thumb, _) = try render("jpeg/baseline-rgb-3-frames.dcm", DICOMRenderOptions.thumbnail(size: 20))
        #expect(thumb.format == "JPEG" && thumb.width == 20 && thumb.height == 15)
        #expect(throws: DICOMError.self) {
            try render("native/mono16.dcm", DICOMRenderOptions(format: .png, viewport: DICOMViewport(width: 100_000, height: 10)))
        }
    }

    @Test func badRenderRequestsAreRefused() throws {
        let bytes = try PixelCorpus.bytes("native/mono16.dcm")
        let l = try DICOMPixelLayout.read(bytes)
        let frame = try l.storedFrame(0, in: bytes)
        #expect(throws: DICOMError.self) { try DICOMPixels.render(header: bytes, frame: frame, options: DICOMRenderOptions(format: .jpeg(quality: 0))) }
        #expect(throws: DICOMError.self) { try DICOMPixels.render(header: bytes, frame: Array(frame.prefix(100)), options: DICOMRenderOptions()) }
        #expect(throws: DICOMError.self) { try DICOMPixels.render(header: [], frame: frame, options: DICOMRenderOptions()) }
        #expect(throws: DICOMError.self) { try DICOMPixels.render(header: bytes, frame: frame, options: DICOMRenderOptions(maxFrameBytes: 1000)) }
    }
}
