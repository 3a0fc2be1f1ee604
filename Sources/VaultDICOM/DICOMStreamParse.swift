// Parsing an instance that is read in order and never whole: a received instance too large for
// memory, sealed as it arrived and decrypted as it is read (STOW-RS, C-STORE). The same checks as a
// file's parse, in two passes over the data: the whole structure (the pre-scan, through a window),
// then the attributes, from the bytes before the top-level Pixel Data.
internal import CDCMTKShim
#if canImport(Glibc)
import Glibc
#endif

extension DICOMParser {
    /// Reads up to `buffer.count` bytes into `buffer`, continuing where the previous call stopped;
    /// returns the count (fewer only at the end of the data).
    public typealias ReadFunction = (UnsafeMutableRawBufferPointer) throws -> Int

    /// At most this many bytes before the top-level Pixel Data are read into memory to parse an
    /// instance that arrives as a stream (an enhanced multi-frame header with thousands of per-frame
    /// groups stays well below it).
    public static let streamHeaderLimit = 64 << 20

    /// Parses an instance of `size` bytes that can only be read in order: `open()` starts a new pass
    /// at its first byte. An instance of at most `headerLimit` bytes is read whole and parsed like
    /// `parse(bytes:)`. A larger one is pre-scanned whole through `open()` (every element, as for a
    /// file), then parsed from its bytes before the top-level Pixel Data, which may not take more than
    /// `headerLimit`. Memory stays within `headerLimit` whatever the size.
    public static func parse(size: Int64, headerLimit: Int = streamHeaderLimit, open: () throws -> ReadFunction) throws(DICOMError) -> DICOMHeader {
        guard size > 0 else { throw .malformed("empty file") }
        let capacity = Int(min(size, Int64(headerLimit)))
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 64)
        var filled = 0
        defer {
            UnsafeMutableRawBufferPointer(rebasing: buffer[0..<filled]).initializeMemory(as: UInt8.self, repeating: 0)  // a patient's clear bytes
            buffer.deallocate()
        }
        if size <= Int64(headerLimit) {
            filled = try readFully(open, into: buffer)
            guard filled == capacity else { throw .unreadable("the instance ended after \(filled) of \(size) bytes") }
            return try parse(buffer: UnsafeRawBufferPointer(buffer))
        }
        try prescan(size: size, read: reader(open))
        let read = try reader(open)
        var want = min(1 << 20, capacity)
        while true {
            filled += try readFully(read, into: UnsafeMutableRawBufferPointer(rebasing: buffer[filled..<want]))
            var err = [CChar](repeating: 0, count: 512)
            var handle: OpaquePointer?
            let rc = mv_dcm_parse_until_pixels(buffer.baseAddress, filled, &handle, &err, err.count)
            if rc == Int32(MV_DCM_ERR_NO_PIXELS) && want < capacity {
                want = min(want * 4, capacity)
                continue
            }
            if rc == Int32(MV_DCM_ERR_NO_PIXELS) {
                let limit = headerLimit >= 1 << 20 ? "\(headerLimit >> 20) MiB" : "\(headerLimit) bytes"
                throw .unsupported(
                    "the attributes before Pixel Data (7FE0,0010) take more than \(limit), the limit for an instance of more than \(limit) received over the network")
            }
            return try finish(rc, handle, err)
        }
    }

    /// The whole-structure pre-scan, over `read`.
    static func prescan(size: Int64, read: @escaping ReadFunction) throws(DICOMError) {
        final class Context {
            let read: ReadFunction
            var failure: (any Error)?
            init(_ read: @escaping ReadFunction) { self.read = read }
        }
        let context = Context(read)
        var err = [CChar](repeating: 0, count: 512)
        let rc = withExtendedLifetime(context) {
            mv_dcm_prescan_stream({ raw, dst, cap in
                guard let raw, let dst else { return -1 }
                let context = Unmanaged<Context>.fromOpaque(raw).takeUnretainedValue()
                do { return try context.read(UnsafeMutableRawBufferPointer(start: dst, count: cap)) } catch {
                    context.failure = error
                    return -1
                }
            }, Unmanaged.passUnretained(context).toOpaque(), UInt64(size), &err, err.count)
        }
        if let failure = context.failure { throw .unreadable("cannot read the instance: \(failure)") }
        if rc == Int32(MV_DCM_OK) { return }
        let message = String(decoding: err.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        switch Int(rc) {
        case Int(MV_DCM_ERR_DICTIONARY): throw .dictionaryUnavailable(message)
        case Int(MV_DCM_ERR_PARSE), Int(MV_DCM_ERR_REFUSED): throw .malformed(message)
        default: throw .internalFailure(message)
        }
    }

    private static func reader(_ open: () throws -> ReadFunction) throws(DICOMError) -> ReadFunction {
        do { return try open() } catch { throw .unreadable("cannot read the instance: \(error)") }
    }

    private static func readFully(_ open: () throws -> ReadFunction, into buffer: UnsafeMutableRawBufferPointer) throws(DICOMError) -> Int {
        try readFully(reader(open), into: buffer)
    }

    private static func readFully(_ read: ReadFunction, into buffer: UnsafeMutableRawBufferPointer) throws(DICOMError) -> Int {
        var total = 0
        while total < buffer.count {
            let n: Int
            do { n = try read(UnsafeMutableRawBufferPointer(rebasing: buffer[total...])) } catch {
                throw .unreadable("cannot read the instance: \(error)")
            }
            if n <= 0 { break }
            total += n
        }
        return total
    }
}
