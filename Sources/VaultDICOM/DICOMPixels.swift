// Pixel data over the DCMTK shim (mv_pixels.cpp): where the frames are, one frame decoded to native
// little endian, one frame rendered to JPEG or PNG. Frames are numbered from 0 (a DICOMweb frame
// number minus 1). Nothing here writes to disk; see docs/pixels.md for memory bounds and syntaxes.
internal import CDCMTKShim
#if canImport(Glibc)
import Glibc
#endif

/// Where a dataset's Pixel Data is in its stream and what it holds, read from the stream's start
/// (which may stop right after the Pixel Data element's header).
public struct DICOMPixelLayout: Sendable, Equatable {
    /// Offset in the stream of the first byte of the Pixel Data value.
    public let valueOffset: UInt64
    /// Length of the value, or nil when undefined (encapsulated).
    public let valueLength: UInt64?
    public let transferSyntaxUID: String
    /// True when the value is a list of items (offset table, then compressed fragments).
    public let isEncapsulated: Bool
    /// True for native data stored big endian (decoding swaps it).
    public let isBigEndian: Bool
    public let numberOfFrames: Int
    public let rows: Int
    public let columns: Int
    public let samplesPerPixel: Int
    public let bitsAllocated: Int
    public let bitsStored: Int
    public let highBit: Int
    public let pixelRepresentation: Int
    public let photometricInterpretation: String
    public let planarConfiguration: Int
    /// Bytes of one native (or decoded) frame.
    public let frameSize: Int
    /// Extended Offset Table (7FE0,0001) and its lengths (7FE0,0002), when the file has them.
    public let extendedOffsetTable: [UInt64]?
    public let extendedOffsetTableLengths: [UInt64]?

    /// Reads the layout from the start of a stream (a Part 10 file or a bare dataset). The bytes run
    /// through the same pre-scan as `DICOMParser` (hostile input is refused as `.malformed`).
    /// Whether `bytes` (the start of a file) reach its top-level Pixel Data: false when they end, on an
    /// element boundary or not, before it. True when the layout is there, even if it cannot be used.
    public static func reachesPixelData(_ bytes: [UInt8]) -> Bool {
        do {
            _ = try read(bytes)
            return true
        } catch .noPixelData, .malformed {
            return false
        } catch {
            return true
        }
    }

    public static func read(_ bytes: [UInt8]) throws(DICOMError) -> DICOMPixelLayout {
        var err = [CChar](repeating: 0, count: 512)
        var c = mv_dcm_pixel_layout()
        let rc = bytes.withUnsafeBytes { mv_dcm_pixel_layout_read($0.baseAddress, $0.count, &c, &err, err.count) }
        if rc != 0 { throw DICOMError.fromPixelStatus(rc, message: pixelString(err), transferSyntax: nil) }
        func u64s(_ offset: UInt64, _ length: UInt64) -> [UInt64]? {
            guard length > 0, offset + length <= UInt64(bytes.count) else { return nil }
            let start = Int(offset)
            return (0..<Int(length / 8)).map { i in
                var v: UInt64 = 0
                for b in (0..<8).reversed() { v = v << 8 | UInt64(bytes[start + i * 8 + b]) }
                return v
            }
        }
        let offsets = u64s(c.eot_offset, c.eot_length)
        let lengths = u64s(c.eot_lengths_offset, c.eot_lengths_length)
        if (c.eot_length > 0) && (offsets == nil || lengths == nil) {
            throw .malformed("the bytes stop inside the Extended Offset Table")
        }
        return DICOMPixelLayout(
            valueOffset: c.value_offset,
            valueLength: c.value_length == MV_DCM_UNDEFINED_LENGTH ? nil : UInt64(c.value_length),
            transferSyntaxUID: tupleString(c.transfer_syntax), isEncapsulated: c.encapsulated != 0,
            isBigEndian: c.big_endian != 0, numberOfFrames: Int(c.number_of_frames), rows: Int(c.rows),
            columns: Int(c.columns), samplesPerPixel: Int(c.samples_per_pixel), bitsAllocated: Int(c.bits_allocated),
            bitsStored: Int(c.bits_stored), highBit: Int(c.high_bit), pixelRepresentation: Int(c.pixel_representation),
            photometricInterpretation: tupleString(c.photometric), planarConfiguration: Int(c.planar_configuration),
            frameSize: Int(c.frame_size), extendedOffsetTable: offsets, extendedOffsetTableLengths: lengths)
    }

    /// True when `DICOMPixels.decodeFrame` can decode this syntax.
    public var canDecode: Bool { DICOMPixels.canDecode(transferSyntax: transferSyntaxUID) }

    /// The stream byte range of native frame `index`.
    public func nativeFrameRange(_ index: Int) throws(DICOMError) -> Range<UInt64> {
        guard !isEncapsulated else { throw .malformed("the pixel data is encapsulated: locate its fragments instead") }
        try checkFrame(index)
        let start = valueOffset + UInt64(index) * UInt64(frameSize)
        return start..<(start + UInt64(frameSize))
    }

    func checkFrame(_ index: Int) throws(DICOMError) {
        guard index >= 0, index < numberOfFrames else {
            throw .frameOutOfRange(requested: index, available: numberOfFrames)
        }
    }

    /// The stream byte ranges of the fragments (item values) that hold encapsulated frame `index`, reading
    /// only item headers and offset table entries through `read(offset, count)`, which returns up to
    /// `count` bytes of the stream from `offset` (fewer only where the stream ends). Frames are found by
    /// the Extended Offset Table, else the Basic Offset Table, else: one frame owns every fragment, one
    /// fragment a frame, or (JPEG family) a new frame at each fragment starting with a JPEG SOI marker.
    /// Throws `DICOMError` for structure problems, and whatever `read` throws.
    public func fragmentRanges(ofFrame index: Int, read: (UInt64, Int) throws -> [UInt8]) throws -> [Range<UInt64>] {
        guard isEncapsulated else { throw DICOMError.malformed("the pixel data is native: use nativeFrameRange") }
        try checkFrame(index)
        let bot = try Self.item(at: valueOffset, read)
        if bot.delimiter { throw DICOMError.malformed("encapsulated pixel data without a Basic Offset Table item") }
        let first = valueOffset + 8 + bot.length
        // Where the frame's first item is, and the next frame's (nil: the frame runs to the delimiter).
        let bounds: (start: UInt64, end: UInt64?)
        if let eot = extendedOffsetTable, eot.count == numberOfFrames {
            bounds = try extendedOffsetTableBounds(eot, frame: index, first: first)
        } else if bot.length > 0 {
            bounds = try basicOffsetTableBounds(tableLength: bot.length, frame: index, first: first, read)
        } else if numberOfFrames > 1 {
            return try fragmentsWithoutOffsetTable(frame: index, first: first, read)
        } else {
            bounds = (first, nil)
        }
        let ranges = try Self.fragments(from: bounds.start, to: bounds.end, read)
        guard !ranges.isEmpty else { throw DICOMError.malformed("frame \(index) has no fragments") }
        return ranges
    }

    /// `count` bytes of the stream from `at`, or `.malformed` where the stream ends before them.
    private static func readExactly(_ at: UInt64, _ count: Int, _ read: (UInt64, Int) throws -> [UInt8]) throws -> [UInt8] {
        let b = try read(at, count)
        guard b.count >= count else {
            throw DICOMError.malformed("truncated: encapsulated pixel data stops at offset \(at + UInt64(b.count))")
        }
        return Array(b.prefix(count))
    }

    private static func u32(_ b: [UInt8], _ i: Int) -> UInt32 {
        UInt32(b[i]) | UInt32(b[i + 1]) << 8 | UInt32(b[i + 2]) << 16 | UInt32(b[i + 3]) << 24
    }

    /// The item header at `at`: the sequence delimiter, or an item and its value length. Nothing else
    /// may appear in encapsulated pixel data, and an item's length must be defined.
    private static func item(at: UInt64, _ read: (UInt64, Int) throws -> [UInt8]) throws -> (delimiter: Bool, length: UInt64) {
        let h = try readExactly(at, 8, read)
        let group = UInt16(h[0]) | UInt16(h[1]) << 8, element = UInt16(h[2]) | UInt16(h[3]) << 8
        let length = u32(h, 4)
        if group == 0xFFFE && element == 0xE0DD { return (true, 0) }
        guard group == 0xFFFE, element == 0xE000 else {
            throw DICOMError.malformed("encapsulated pixel data: expected an item at offset \(at), found tag \(DICOMTag(group, element))")
        }
        guard length != 0xFFFF_FFFF else {
            throw DICOMError.malformed("encapsulated pixel data: item with undefined length at offset \(at)")
        }
        return (false, UInt64(length))
    }

    /// Frame `index`'s bounds from the Extended Offset Table (64-bit offsets from the first fragment's
    /// item), checked for overflow and order.
    private func extendedOffsetTableBounds(_ eot: [UInt64], frame index: Int, first: UInt64) throws -> (start: UInt64, end: UInt64?) {
        let (start, overflow) = first.addingReportingOverflow(eot[index])
        guard !overflow else { throw DICOMError.malformed("Extended Offset Table entry \(index) is out of range") }
        guard index + 1 < numberOfFrames else { return (start, nil) }
        guard eot[index + 1] > eot[index] else { throw DICOMError.malformed("Extended Offset Table entries do not increase") }
        let (end, overflow2) = first.addingReportingOverflow(eot[index + 1])
        guard !overflow2 else { throw DICOMError.malformed("Extended Offset Table entry \(index + 1) is out of range") }
        return (start, end)
    }

    /// Frame `index`'s bounds from the Basic Offset Table (the first item's value, `tableLength` bytes, one
    /// 32-bit offset per frame): only this frame's entry and the next one are read.
    private func basicOffsetTableBounds(
        tableLength length: UInt64, frame index: Int, first: UInt64, _ read: (UInt64, Int) throws -> [UInt8]
    ) throws -> (start: UInt64, end: UInt64?) {
        guard length == 4 * UInt64(numberOfFrames) else {
            throw DICOMError.malformed("the Basic Offset Table holds \(length / 4) entries for \(numberOfFrames) frames")
        }
        let entry = try Self.readExactly(valueOffset + 8 + 4 * UInt64(index), index + 1 < numberOfFrames ? 8 : 4, read)
        let start = first + UInt64(Self.u32(entry, 0))
        guard index + 1 < numberOfFrames else { return (start, nil) }
        let next = UInt64(Self.u32(entry, 4))
        guard next > UInt64(Self.u32(entry, 0)) else { throw DICOMError.malformed("Basic Offset Table entries do not increase") }
        return (start, first + next)
    }

    /// Several frames and no offset table: every item header is walked once; then one fragment is one
    /// frame, or (JPEG family) a frame starts at each fragment that begins with a JPEG SOI marker.
    private func fragmentsWithoutOffsetTable(frame index: Int, first: UInt64, _ read: (UInt64, Int) throws -> [UInt8]) throws -> [Range<UInt64>] {
        let fragments = try Self.fragments(from: first, to: nil, read)
        if fragments.count == numberOfFrames { return [fragments[index]] }
        guard DICOMPixels.isJPEGFamily(transferSyntaxUID) else {
            throw DICOMError.malformed(
                "\(fragments.count) fragments for \(numberOfFrames) frames and no offset table: cannot tell where frame \(index) is")
        }
        var groups: [[Range<UInt64>]] = []
        for f in fragments {
            let soi = f.count >= 2 ? try Self.readExactly(f.lowerBound, 2, read) == [0xFF, 0xD8] : false
            if soi || groups.isEmpty { groups.append([f]) } else { groups[groups.count - 1].append(f) }
        }
        guard groups.count == numberOfFrames else {
            throw DICOMError.malformed(
                "\(groups.count) JPEG frames found in the fragments for \(numberOfFrames) frames and no offset table")
        }
        return groups[index]
    }

    /// The values of the items from `start` up to `end` (which must be an item boundary), or up to the
    /// sequence delimiter when `end` is nil; at most `maxFragments`.
    private static func fragments(from start: UInt64, to end: UInt64?, _ read: (UInt64, Int) throws -> [UInt8]) throws -> [Range<UInt64>] {
        var ranges: [Range<UInt64>] = []
        var at = start
        while end.map({ at < $0 }) ?? true {
            let i = try item(at: at, read)
            if i.delimiter {
                guard end == nil else { throw DICOMError.malformed("an offset table points past the last fragment") }
                break
            }
            guard ranges.count < maxFragments else {
                throw DICOMError.malformed("more than \(maxFragments) pixel data fragments; refused")
            }
            ranges.append((at + 8)..<(at + 8 + i.length))
            at += 8 + i.length
        }
        if let end, at != end { throw DICOMError.malformed("an offset table entry does not point at a fragment") }
        return ranges
    }

    /// The pre-scan's element limit, applied to fragments too.
    static let maxFragments = 1_000_000

    /// Frame `index` as stored (native bytes, or its fragments joined), from the stream in memory.
    public func storedFrame(_ index: Int, in stream: [UInt8]) throws(DICOMError) -> [UInt8] {
        let count = UInt64(stream.count)
        func slice(_ r: Range<UInt64>) throws(DICOMError) -> ArraySlice<UInt8> {
            guard r.upperBound <= count else { throw .malformed("truncated: frame \(index) runs past the end of the data") }
            return stream[Int(r.lowerBound)..<Int(r.upperBound)]
        }
        if !isEncapsulated { return Array(try slice(try nativeFrameRange(index))) }
        let ranges: [Range<UInt64>]
        do {
            ranges = try fragmentRanges(ofFrame: index) { at, n in
                guard at < count else { return [] }
                return Array(stream[Int(at)..<Int(min(count, at + UInt64(n)))])
            }
        } catch let e as DICOMError {
            throw e
        } catch {
            throw .internalFailure("\(error)")
        }
        var out: [UInt8] = []
        for r in ranges { out += try slice(r) }
        return out
    }

    /// The C description, rebuilt from the Swift value.
    var c: mv_dcm_pixel_layout {
        var l = mv_dcm_pixel_layout()
        l.value_offset = valueOffset
        l.value_length = valueLength.map { UInt32(truncatingIfNeeded: $0) } ?? MV_DCM_UNDEFINED_LENGTH
        l.encapsulated = isEncapsulated ? 1 : 0
        l.big_endian = isBigEndian ? 1 : 0
        fillTuple(&l.transfer_syntax, transferSyntaxUID)
        l.number_of_frames = UInt32(clamping: numberOfFrames)
        l.rows = UInt16(clamping: rows)
        l.columns = UInt16(clamping: columns)
        l.samples_per_pixel = UInt16(clamping: samplesPerPixel)
        l.bits_allocated = UInt16(clamping: bitsAllocated)
        l.bits_stored = UInt16(clamping: bitsStored)
        l.high_bit = UInt16(clamping: highBit)
        l.pixel_representation = UInt16(clamping: pixelRepresentation)
        l.planar_configuration = UInt16(clamping: planarConfiguration)
        fillTuple(&l.photometric, photometricInterpretation)
        l.frame_size = UInt64(clamping: frameSize)
        return l
    }
}

/// One frame decoded to native little endian bytes (as Explicit VR Little Endian holds them).
public struct DICOMDecodedFrame: Sendable, Equatable {
    public let bytes: [UInt8]
    /// The decoded pixels' colour model (JPEG decoding turns YBR into RGB).
    public let photometricInterpretation: String
    public let planarConfiguration: Int
}

/// A VOI window (PS3.3 C.11.2.1.2): center, width and function.
public struct DICOMWindow: Sendable, Equatable {
    public enum Function: Sendable, Equatable { case linear, linearExact, sigmoid }
    public let center: Double
    public let width: Double
    public let function: Function
    public init(center: Double, width: Double, function: Function = .linear) {
        self.center = center
        self.width = width
        self.function = function
    }
}

/// Scale to fit within width x height, keeping the aspect ratio (0 leaves that side free).
public struct DICOMViewport: Sendable, Equatable {
    public let width: Int
    public let height: Int
    public init(width: Int, height: Int) {
        self.width = width
        self.height = height
    }
}

/// How to render one frame.
public struct DICOMRenderOptions: Sendable, Equatable {
    public enum Format: Sendable, Equatable {
        /// Quality 1-100.
        case jpeg(quality: Int)
        case png
    }
    public var format: Format
    /// nil: the file's first window, else its first VOI LUT, else the frame's min-max.
    public var window: DICOMWindow?
    /// nil: the frame's own size.
    public var viewport: DICOMViewport?
    /// Decoded frames and viewports larger than this are refused.
    public var maxFrameBytes: Int

    public init(
        format: Format = .jpeg(quality: 90), window: DICOMWindow? = nil, viewport: DICOMViewport? = nil,
        maxFrameBytes: Int = DICOMPixels.defaultMaxFrameBytes
    ) {
        self.format = format
        self.window = window
        self.viewport = viewport
        self.maxFrameBytes = maxFrameBytes
    }

    /// A thumbnail: JPEG, fitting within `size` x `size`.
    public static func thumbnail(size: Int = 128, quality: Int = 80) -> DICOMRenderOptions {
        DICOMRenderOptions(format: .jpeg(quality: quality), viewport: DICOMViewport(width: size, height: size))
    }
}

/// Frame decoding and rendering through DCMTK. Stateless and thread-safe.
public enum DICOMPixels {
    /// The default bound on one decoded frame (and on a viewport's pixels): 512 MiB.
    public static let defaultMaxFrameBytes = 512 << 20

    /// The compressed syntaxes `decodeFrame` decodes (the native ones are copied).
    public static let decodableSyntaxes: [String] = [
        "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.5",
    ]

    /// True when frames stored in `transferSyntax` can be decoded to Explicit VR Little Endian here.
    public static func canDecode(transferSyntax: String) -> Bool { mv_dcm_can_decode(transferSyntax) != 0 }

    static func isJPEGFamily(_ uid: String) -> Bool { uid.hasPrefix("1.2.840.10008.1.2.4.") }

    /// Decodes one frame (as stored: native bytes, or the frame's fragments joined) to native little
    /// endian bytes. Throws `.unsupportedTransferSyntax` for syntaxes DCMTK cannot decode here (JPEG 2000,
    /// ...), `.malformed` for bad data, and refuses frames larger than `maxFrameBytes` before allocating.
    public static func decodeFrame(
        _ frame: [UInt8], layout: DICOMPixelLayout, maxFrameBytes: Int = defaultMaxFrameBytes
    ) throws(DICOMError) -> DICOMDecodedFrame {
        var err = [CChar](repeating: 0, count: 512)
        var photometric = [CChar](repeating: 0, count: 20)
        var planar: UInt16 = 0
        var out: UnsafeMutableRawPointer?
        var length = 0
        var l = layout.c
        let rc = frame.withUnsafeBytes {
            mv_dcm_decode_frame(&l, $0.baseAddress, $0.count, max(0, maxFrameBytes), &out, &length, &photometric, &planar, &err, err.count)
        }
        guard rc == 0, let out else {
            throw DICOMError.fromPixelStatus(rc, message: pixelString(err), transferSyntax: layout.transferSyntaxUID)
        }
        defer { mv_dcm_free(out) }
        let bytes = Array(UnsafeRawBufferPointer(start: out, count: length))
        return DICOMDecodedFrame(bytes: bytes, photometricInterpretation: pixelString(photometric), planarConfiguration: Int(planar))
    }

    /// Renders one frame to JPEG or PNG. `header` is the stream's start through at least the Pixel Data
    /// element's header (the attributes before Pixel Data are used: windows, VOI LUT, rescale, palette);
    /// `frame` is the one frame as stored. A large multi-frame file never has to be in memory whole.
    public static func render(header: [UInt8], frame: [UInt8], options: DICOMRenderOptions) throws(DICOMError) -> [UInt8] {
        var o = mv_dcm_render_options()
        switch options.format {
        case .jpeg(let quality):
            o.format = Int32(MV_DCM_RENDER_JPEG)
            o.quality = Int32(clamping: quality)
        case .png:
            o.format = Int32(MV_DCM_RENDER_PNG)
        }
        if let w = options.window {
            o.has_window = 1
            o.window_center = w.center
            o.window_width = w.width
            o.window_function = switch w.function {
            case .linear: Int32(MV_DCM_VOI_LINEAR)
            case .linearExact: Int32(MV_DCM_VOI_LINEAR_EXACT)
            case .sigmoid: Int32(MV_DCM_VOI_SIGMOID)
            }
        }
        if let v = options.viewport {
            guard v.width >= 0, v.height >= 0 else { throw .malformed("a viewport needs a non-negative width and height") }
            o.viewport_width = UInt32(clamping: v.width)
            o.viewport_height = UInt32(clamping: v.height)
        }
        o.max_frame_bytes = max(0, options.maxFrameBytes)
        var err = [CChar](repeating: 0, count: 512)
        var out: UnsafeMutableRawPointer?
        var length = 0
        let rc = header.withUnsafeBytes { h in
            frame.withUnsafeBytes { f in
                mv_dcm_render(h.baseAddress, h.count, f.baseAddress, f.count, &o, &out, &length, &err, err.count)
            }
        }
        guard rc == 0, let out else {
            let ts = (try? DICOMPixelLayout.read(header))?.transferSyntaxUID
            throw DICOMError.fromPixelStatus(rc, message: pixelString(err), transferSyntax: ts)
        }
        defer { mv_dcm_free(out) }
        return Array(UnsafeRawBufferPointer(start: out, count: length))
    }
}

extension DICOMError {
    static func fromPixelStatus(_ rc: Int32, message: String, transferSyntax: String?) -> DICOMError {
        switch Int(rc) {
        case Int(MV_DCM_ERR_DICTIONARY): .dictionaryUnavailable(message)
        case Int(MV_DCM_ERR_PARSE), Int(MV_DCM_ERR_REFUSED): .malformed(message)
        case Int(MV_DCM_ERR_NO_PIXELS): .noPixelData(message)
        case Int(MV_DCM_ERR_UNSUPPORTED):
            if let ts = transferSyntax, !DICOMPixels.canDecode(transferSyntax: ts) {
                .unsupportedTransferSyntax(ts)
            } else {
                .unsupported(message)
            }
        default: .internalFailure(message)
        }
    }
}

private func pixelString(_ a: [CChar]) -> String {
    let bytes = a.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
    return String(decoding: bytes, as: UTF8.self)
}

/// A NUL-terminated C char array (imported as a tuple) as a String.
private func tupleString<T>(_ tuple: T) -> String {
    withUnsafeBytes(of: tuple) { raw in
        String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
    }
}

/// Copies `s` into a C char array (imported as a tuple), truncated and NUL-terminated.
private func fillTuple<T>(_ tuple: inout T, _ s: String) {
    withUnsafeMutableBytes(of: &tuple) { raw in
        raw.initializeMemory(as: UInt8.self, repeating: 0)
        for (i, b) in s.utf8.prefix(raw.count - 1).enumerated() { raw[i] = b }
    }
}
