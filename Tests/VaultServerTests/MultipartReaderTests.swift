// The streaming multipart/related reader of STOW-RS: the same parts whatever the sizes of the pieces
// the body arrives in (a boundary split across reads, CR LF at a read's end), and clear errors.
import Foundation
import Testing
@testable import VaultServer

@Suite struct MultipartReaderTests {
    struct Collector: MultipartReceiver {
        var parts: [(headers: [String: String], bytes: [UInt8])] = []
        mutating func partBegan(headers: [String: String]) throws { parts.append((headers, [])) }
        mutating func partBytes(_ bytes: UnsafeRawBufferPointer) throws { parts[parts.count - 1].bytes += Array(bytes) }
        mutating func partEnded() throws {}
    }

    static func read(_ body: [UInt8], boundary: String, pieces: Int) throws -> [(headers: [String: String], bytes: [UInt8])] {
        var reader = MultipartReader(boundary: boundary)
        var c = Collector()
        var i = 0
        while i < body.count {
            let j = min(body.count, i + pieces)
            try body[i..<j].withUnsafeBytes { try reader.feed($0, to: &c) }
            i = j
        }
        try reader.finish()
        return c.parts
    }

    @Test func partsAreTheSameWhateverTheReadSizes() throws {
        // Part data full of what looks like a boundary's start: CR LF, dashes, a boundary prefix.
        let tricky = Array("\r\n--bound\r\n-\r\n--boundar".utf8) + (0..<300).map { UInt8($0 % 256) } + Array("\r\n".utf8)
        let plain = Array(repeating: UInt8(0x41), count: 1000)
        var body = Array("preamble to ignore\r\n--boundary\r\nContent-Type: application/dicom\r\nX-Folded: a\r\n  b\r\n\r\n".utf8)
        body += tricky + Array("\r\n--boundary  \r\n\r\n".utf8) + plain + Array("\r\n--boundary\r\nContent-Type: image/jpeg\r\n\r\n\r\n--boundary--\r\nepilogue".utf8)
        for pieces in [1, 2, 3, 5, 7, 11, 64, 1000, body.count] {
            let parts = try Self.read(body, boundary: "boundary", pieces: pieces)
            #expect(parts.count == 3, "pieces \(pieces)")
            #expect(parts.first?.headers == ["content-type": "application/dicom", "x-folded": "a b"])
            #expect(parts.first?.bytes == tricky, "pieces \(pieces)")
            #expect(parts.dropFirst().first?.headers == [:] && parts.dropFirst().first?.bytes == plain, "pieces \(pieces)")
            #expect(parts.last?.headers == ["content-type": "image/jpeg"] && parts.last?.bytes == [])
        }
    }

    @Test func malformedBodiesAreRefusedWithAReason() throws {
        let cases: [(String, String)] = [
            ("no boundary at all", "no boundary found"),
            ("--b\r\nContent-Type: application/dicom\r\n\r\ndata without end", "ends before its closing boundary"),
            ("--bXY\r\n\r\n", "not followed by CRLF"),
            ("--b\r\nno colon here\r\n\r\ndata\r\n--b--", "no colon"),
        ]
        for (body, reason) in cases {
            #expect { _ = try Self.read(Array(body.utf8), boundary: "b", pieces: 3) } throws: {
                ($0 as? MultipartError)?.message.contains(reason) == true
            }
        }
        let huge = "--b\r\n" + String(repeating: "X-A: b\r\n", count: 3000)
        #expect { _ = try Self.read(Array(huge.utf8), boundary: "b", pieces: 4096) } throws: {
            ($0 as? MultipartError)?.message.contains("longer than") == true
        }
    }

    @Test func mediaTypesAreParsedWithQuotesAndCase() throws {
        let m = try #require(MediaType(#"Multipart/Related; type="application/dicom"; boundary="a;b c""#))
        #expect(m.type == "multipart/related")
        #expect(m.parameters == ["type": "application/dicom", "boundary": "a;b c"])
        #expect(MediaType("not a type") == nil)
    }
}
