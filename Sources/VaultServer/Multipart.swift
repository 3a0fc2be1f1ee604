// A streaming reader of multipart/related bodies (RFC 2046 §5.1, RFC 2387), for STOW-RS: it is fed
// the body as it arrives and hands each part's bytes on at once, holding back only what could be the
// start of a boundary. Memory does not grow with a part's size.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Why a multipart body could not be read.
struct MultipartError: Error, Equatable, CustomStringConvertible {
    let message: String
    init(_ message: String) { self.message = message }
    var description: String { message }
}

/// What the reader reports, in order: a part's head, its bytes (any number of calls), its end.
protocol MultipartReceiver {
    mutating func partBegan(headers: [String: String]) throws
    mutating func partBytes(_ bytes: UnsafeRawBufferPointer) throws
    mutating func partEnded() throws
}

struct MultipartReader {
    private enum State {
        /// Before the first boundary (the preamble is ignored).
        case preamble
        /// Just after a boundary: "--" ends the body, CRLF starts a part's head.
        case afterBoundary
        case head
        case body
        /// After the closing boundary (the epilogue is ignored).
        case done
    }

    /// Longest part head accepted (its header lines).
    static let maxHeadBytes = 16 * 1024

    private let delimiter: [UInt8]  // CRLF "--" boundary
    private var state = State.preamble
    private var pending: [UInt8] = []
    private(set) var parts = 0

    init(boundary: String) {
        delimiter = Array("\r\n--\(boundary)".utf8)
        // The first boundary may open the body with no CRLF before it.
        pending = Array("\r\n".utf8)
    }

    var isComplete: Bool { if case .done = state { true } else { false } }

    /// Feeds the next bytes of the body.
    mutating func feed<R: MultipartReceiver>(_ bytes: UnsafeRawBufferPointer, to receiver: inout R) throws {
        if case .done = state { return }
        pending.append(contentsOf: bytes)
        var start = 0
        defer { pending.removeFirst(start) }
        while true {
            switch state {
            case .preamble:
                guard let at = find(delimiter, from: start) else {
                    start = max(start, pending.count - delimiter.count + 1)
                    return
                }
                start = at + delimiter.count
                state = .afterBoundary
            case .afterBoundary:
                guard pending.count - start >= 2 else { return }
                if pending[start] == UInt8(ascii: "-") && pending[start + 1] == UInt8(ascii: "-") {
                    state = .done
                    start = pending.count
                    return
                }
                // Transport padding (spaces, tabs) may follow a boundary before its CRLF.
                guard let crlf = find(Array("\r\n".utf8), from: start) else {
                    if pending.count - start > 256 { throw MultipartError("a boundary line is not followed by CRLF") }
                    return
                }
                guard pending[start..<crlf].allSatisfy({ $0 == 0x20 || $0 == 0x09 }) else {
                    throw MultipartError("a boundary line is not followed by CRLF")
                }
                start = crlf + 2
                state = .head
            case .head:
                guard pending.count - start >= 2 else { return }
                // A part with no header lines: its body starts right after the boundary line's CRLF.
                let headers: [String: String]
                if pending[start] == 0x0D && pending[start + 1] == 0x0A {
                    headers = [:]
                    start += 2
                } else {
                    guard let end = find(Array("\r\n\r\n".utf8), from: start) else {
                        if pending.count - start > Self.maxHeadBytes { throw MultipartError("a part's header is longer than \(Self.maxHeadBytes) bytes") }
                        return
                    }
                    if end - start > Self.maxHeadBytes { throw MultipartError("a part's header is longer than \(Self.maxHeadBytes) bytes") }
                    headers = try Self.parseHeaders(pending[start..<end])
                    start = end + 4
                }
                try receiver.partBegan(headers: headers)
                parts += 1
                state = .body
            case .body:
                if let at = find(delimiter, from: start) {
                    if at > start { try pending[start..<at].withUnsafeBytes { try receiver.partBytes($0) } }
                    try receiver.partEnded()
                    start = at + delimiter.count
                    state = .afterBoundary
                } else {
                    // Everything but a possible beginning of the delimiter is part data.
                    let safe = max(start, pending.count - delimiter.count + 1)
                    if safe > start { try pending[start..<safe].withUnsafeBytes { try receiver.partBytes($0) } }
                    start = safe
                    return
                }
            case .done:
                start = pending.count
                return
            }
        }
    }

    /// Call at the end of the body: a body without its closing boundary is refused.
    func finish() throws {
        switch state {
        case .done: return
        case .preamble: throw MultipartError("the body has no part (no boundary found)")
        default: throw MultipartError("the body ends before its closing boundary")
        }
    }

    /// The first occurrence of `needle` at or after `from` (memchr for its first byte: the body of a
    /// part is megabytes of pixel data, scanned once).
    private func find(_ needle: [UInt8], from: Int) -> Int? {
        guard pending.count - from >= needle.count, let first = needle.first else { return nil }
        return pending.withUnsafeBytes { (buf: UnsafeRawBufferPointer) -> Int? in
            guard let base = buf.baseAddress else { return nil }
            var i = from
            let last = buf.count - needle.count
            while i <= last {
                guard let hit = memchr(base + i, Int32(first), last - i + 1) else { return nil }
                let at = base.distance(to: UnsafeRawPointer(hit))
                if memcmp(base + at, needle, needle.count) == 0 { return at }
                i = at + 1
            }
            return nil
        }
    }

    /// Header lines, names lower-cased. Folded lines are joined.
    static func parseHeaders(_ bytes: ArraySlice<UInt8>) throws -> [String: String] {
        guard let text = String(bytes: bytes, encoding: .utf8) else { throw MultipartError("a part's header is not text") }
        var headers: [String: String] = [:]
        var lastName: String?
        for line in text.components(separatedBy: "\r\n") where !line.isEmpty {
            if line.first == " " || line.first == "\t", let name = lastName {
                headers[name, default: ""] += " " + line.trimmingCharacters(in: .whitespaces)
                continue
            }
            guard let colon = line.firstIndex(of: ":") else { throw MultipartError("a part's header line has no colon") }
            let name = line[..<colon].trimmingCharacters(in: .whitespaces).lowercased()
            headers[name] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            lastName = name
        }
        return headers
    }
}

/// A media type and its parameters: `multipart/related; type="application/dicom"; boundary=x`.
struct MediaType: Equatable {
    let type: String
    let parameters: [String: String]

    init?(_ text: String) {
        var fields = Self.split(text)
        guard let first = fields.first?.trimmingCharacters(in: .whitespaces).lowercased(), first.contains("/") else { return nil }
        fields.removeFirst()
        type = first
        var parameters: [String: String] = [:]
        for field in fields {
            guard let eq = field.firstIndex(of: "=") else { continue }
            let name = field[..<eq].trimmingCharacters(in: .whitespaces).lowercased()
            var value = field[field.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            if value.count >= 2 && value.hasPrefix("\"") && value.hasSuffix("\"") {
                value = String(value.dropFirst().dropLast()).replacingOccurrences(of: "\\\"", with: "\"")
            }
            parameters[name] = value
        }
        self.parameters = parameters
    }

    /// Splits at semicolons outside quotes.
    private static func split(_ text: String) -> [String] {
        var fields: [String] = [], current = "", quoted = false
        for c in text {
            if c == "\"" { quoted.toggle() }
            if c == ";" && !quoted {
                fields.append(current)
                current = ""
            } else {
                current.append(c)
            }
        }
        fields.append(current)
        return fields
    }
}
