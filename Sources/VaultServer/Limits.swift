// Resource limits for the API listeners: timeouts, a connection cap per listener, and a bound on the
// size of a request head. Without them one local user holding idle or slow connections could exhaust
// the server's descriptors and shut the vault's owner out of the socket (issue 10, item 7).
import Foundation
import HummingbirdCore
import Logging
import NIOCore

/// Limits for each listener (docs/api.md, "Limits"). Times are in seconds.
public struct ServerLimits: Sendable, Equatable {
    /// A connection's first request head (request line and headers) must arrive in full within this
    /// time of the connection's start.
    public var headerTimeout: Double
    /// A connection with no request in progress is closed after this time. This also bounds the head
    /// of a later request on a kept-alive connection: it counts from the end of the previous response
    /// until the next head is complete (not from its first byte, which a pipelining client may send
    /// while a long response is still streaming).
    public var idleTimeout: Double
    /// A response that cannot be sent for this long (the client stopped reading) closes the connection.
    public var sendTimeout: Double
    /// Connections served at once on the loopback TCP listener; further ones wait in the kernel's
    /// accept queue and are accepted as others close.
    public var maxHTTPConnections: Int
    /// The same for the Unix socket, counted apart, so that TCP clients never take the owner's place.
    public var maxSocketConnections: Int
    /// Longest request line (method, URL, version); longer gets 414 and the connection is closed.
    public var maxURLBytes: Int
    /// Longest request head (request line and every header); longer gets 431 and the connection is closed.
    public var maxHeaderBytes: Int
    /// Most header fields in one request; more gets 431.
    public var maxHeaderFields: Int
    /// Largest STOW-RS request body (all its instances); larger gets 413. Only STOW-RS
    /// (POST …/dicom-web/studies[/{study}]) may send a body at all.
    public var maxStoreBytes: Int64
    /// Clear bytes of one STOW-RS request held in memory until import. Instances past it are sealed
    /// as they arrive into unnamed files in the vault's tmp directory (`SealedSpill`), so that a
    /// request's memory stays within this however large its instances are.
    public var storeMemoryBytes: Int64

    public init(
        headerTimeout: Double = 10, idleTimeout: Double = 60, sendTimeout: Double = 60,
        maxHTTPConnections: Int = 64, maxSocketConnections: Int = 256,
        maxURLBytes: Int = 16 * 1024, maxHeaderBytes: Int = 32 * 1024, maxHeaderFields: Int = 100,
        maxStoreBytes: Int64 = 4 << 30, storeMemoryBytes: Int64 = 64 << 20
    ) {
        self.headerTimeout = headerTimeout
        self.idleTimeout = idleTimeout
        self.sendTimeout = sendTimeout
        self.maxHTTPConnections = maxHTTPConnections
        self.maxSocketConnections = maxSocketConnections
        self.maxURLBytes = maxURLBytes
        self.maxHeaderBytes = maxHeaderBytes
        self.maxHeaderFields = maxHeaderFields
        self.maxStoreBytes = maxStoreBytes
        self.storeMemoryBytes = storeMemoryBytes
    }

    public static let defaults = ServerLimits()
}

extension TimeAmount {
    static func seconds(_ s: Double) -> TimeAmount { .nanoseconds(Int64(max(0, s) * 1e9)) }
}

/// Hummingbird's HTTP/1 child channel with `RequestGuard` in front of the HTTP decoder.
struct GuardedHTTP1Channel: ServerChildChannel {
    typealias Value = HTTP1Channel.Value
    let inner: HTTP1Channel
    let limits: ServerLimits

    init(responder: @escaping HTTPChannelHandler.Responder, limits: ServerLimits) {
        // The decoder's own limits sit above ours, so that ours answer first (with 414/431, not 400).
        var configuration = HTTP1Channel.Configuration(
            idleTimeout: .seconds(limits.idleTimeout),
            httpDecoderConfiguration: .init(
                maxHeaderFieldSize: limits.maxHeaderBytes + 1024, maxHeaderListSize: limits.maxHeaderBytes + 1024,
                maxHeaderFieldCount: limits.maxHeaderFields + 16))
        configuration.additionalChannelHandlers = { [] }
        inner = HTTP1Channel(responder: responder, configuration: configuration)
        self.limits = limits
    }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let limits = self.limits
        let inner = self.inner
        return channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(RequestGuard(limits: limits), position: .first)
        }.flatMap {
            inner.setup(channel: channel, logger: logger)
        }
    }

    func handle(value: Value, logger: Logger) async {
        await inner.handle(value: value, logger: logger)
    }

    /// The server builder for `Application(server:)`.
    static func builder(_ limits: ServerLimits) -> HTTPServerBuilder {
        HTTPServerBuilder { responder in GuardedHTTP1Channel(responder: responder, limits: limits) }
    }
}

/// Sits next to the socket, before the HTTP decoder, and watches raw bytes: it bounds the request head
/// (414, 431), refuses request bodies except STOW-RS's (413), closes a connection whose first
/// head does not arrive in time, and one whose response cannot be sent for `sendTimeout`.
///
/// After a refusal it writes the answer, shuts down its side for writing, and reads and drops what the
/// client still sends for a moment before closing (closing with unread input would reset the
/// connection and the client might never see the answer).
final class RequestGuard: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let limits: ServerLimits
    /// Bytes, lines and fields of the head being read.
    private var headBytes = 0
    private var lineBytes = 0
    private var lineIndex = 0
    private var fields = 0
    /// The start of the current line, enough to recognise Content-Length and Transfer-Encoding.
    private var line: [UInt8] = []
    /// The start of the request line (method and path), and the body's framing from the head.
    private var requestLine: [UInt8] = []
    private var contentLength: Int64?
    private var transferEncoding = false
    private var chunked = false
    /// Whether the head announces a body: Transfer-Encoding, or a Content-Length other than 0.
    private var declaresBody: Bool { transferEncoding || (contentLength ?? 0) != 0 }
    /// Inside an accepted body: its bytes pass unscanned (the route bounds its size).
    private var body = BodySkipper.none
    private var inHead = true
    private var refused = false
    private var headerTimer: Scheduled<Void>?
    private var sendTimer: Scheduled<Void>?
    private var lingerTimer: Scheduled<Void>?

    private static let linePrefix = 256
    private static let lingerSeconds = 2.0

    init(limits: ServerLimits) {
        self.limits = limits
    }

    func handlerAdded(context: ChannelHandlerContext) {
        // The first request's head must arrive within the header timeout of the connection's start.
        armHeaderTimer(context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        cancelTimers()
    }

    func channelInactive(context: ChannelHandlerContext) {
        cancelTimers()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if refused {
            // Lingering after a refusal: drop what the client still sends.
            context.read()
            return
        }
        let buffer = unwrapInboundIn(data)
        var view = buffer.readableBytesView
        while !view.isEmpty {
            if body.isActive {
                view = body.skip(view)
                continue
            }
            let byte = view.removeFirst()
            if let refusal = scan(byte, context) {
                refuse(context, refusal)
                return
            }
        }
        context.fireChannelRead(data)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            sendTimer?.cancel()
            sendTimer = nil
        } else if sendTimer == nil {
            let channel = context.channel
            sendTimer = context.eventLoop.scheduleTask(in: .seconds(limits.sendTimeout)) {
                channel.close(promise: nil)
            }
        }
        context.fireChannelWritabilityChanged()
    }

    private enum Refusal {
        case urlTooLong, headTooLarge, tooManyFields, body
    }

    /// One byte of input. Returns a refusal when a limit is crossed.
    private func scan(_ byte: UInt8, _ context: ChannelHandlerContext) -> Refusal? {
        if !inHead {
            // A later request on this connection: its head is bounded by the idle timeout, which runs
            // from the end of the previous response (Hummingbird's HTTPConnectionStateHandler).
            inHead = true
        }
        headBytes += 1
        if byte == UInt8(ascii: "\n") {
            if line.last == UInt8(ascii: "\r") { line.removeLast() }
            if line.isEmpty && lineBytes <= 1 {
                if lineIndex > 0 {
                    // The empty line: the head is complete. Only STOW-RS may have a body.
                    let hasBody = declaresBody
                    let store = Self.isStore(requestLine)
                    let framing: BodySkipper = chunked ? .chunked(.size(0, digits: 0)) : .length(contentLength ?? 0)
                    resetHead()
                    guard hasBody else { return nil }
                    guard store else { return .body }
                    body = framing
                    return nil
                }
                // Empty lines before the request line are ignored (RFC 9112 §2.2), but counted.
            } else if lineIndex == 0 {
                requestLine = line
                lineIndex = 1
            } else {
                fields += 1
                if fields > limits.maxHeaderFields { return .tooManyFields }
                noteFraming(line, truncated: lineBytes > Self.linePrefix)
                lineIndex += 1
            }
            line.removeAll(keepingCapacity: true)
            lineBytes = 0
        } else {
            lineBytes += 1
            if line.count < Self.linePrefix { line.append(byte) }
            if lineIndex == 0 && lineBytes > limits.maxURLBytes { return .urlTooLong }
        }
        if headBytes > limits.maxHeaderBytes { return lineIndex == 0 ? .urlTooLong : .headTooLarge }
        return nil
    }

    private func resetHead() {
        headBytes = 0
        lineBytes = 0
        lineIndex = 0
        fields = 0
        line.removeAll(keepingCapacity: true)
        requestLine.removeAll(keepingCapacity: true)
        contentLength = nil
        transferEncoding = false
        chunked = false
        inHead = false
        headerTimer?.cancel()
        headerTimer = nil
    }

    /// Remembers how the body is framed: Transfer-Encoding (chunked or not), or a Content-Length. A
    /// Content-Length that is cut off, empty or not a number counts as a body of unknown size.
    private func noteFraming(_ line: [UInt8], truncated: Bool) {
        guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { return }
        let name = String(decoding: line[..<colon], as: UTF8.self).lowercased()
        let value = String(decoding: line[(colon + 1)...], as: UTF8.self).trimmingCharacters(in: .whitespaces).lowercased()
        switch name {
        case "content-length":
            // Digits only ("-0" or "+0" is not a zero length).
            let digits = !value.isEmpty && value.utf8.allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
            contentLength = truncated || !digits ? Int64.max : Int64(value) ?? Int64.max
        case "transfer-encoding":
            transferEncoding = true
            if value.contains("chunked") { chunked = true }
        default: break
        }
    }

    /// POST …/dicom-web/studies or …/dicom-web/studies/{study} (any prefix, any query).
    static func isStore(_ requestLine: [UInt8]) -> Bool {
        let text = String(decoding: requestLine, as: UTF8.self)
        let fields = text.split(separator: " ", omittingEmptySubsequences: true)
        guard fields.count >= 2, fields[0] == "POST" else { return false }
        let path = fields[1].split(separator: "?", maxSplits: 1).first.map(String.init) ?? ""
        let parts = path.split(separator: "/").map(String.init)
        guard let i = parts.lastIndex(of: "dicom-web") else { return false }
        let rest = Array(parts[(i + 1)...])
        return rest == ["studies"] || (rest.count == 2 && rest[0] == "studies")
    }

    private func armHeaderTimer(_ context: ChannelHandlerContext) {
        headerTimer?.cancel()
        let channel = context.channel
        headerTimer = context.eventLoop.scheduleTask(in: .seconds(limits.headerTimeout)) {
            channel.close(promise: nil)
        }
    }

    private func cancelTimers() {
        headerTimer?.cancel()
        sendTimer?.cancel()
        lingerTimer?.cancel()
        headerTimer = nil
        sendTimer = nil
        lingerTimer = nil
    }

    private func refuse(_ context: ChannelHandlerContext, _ refusal: Refusal) {
        refused = true
        headerTimer?.cancel()
        headerTimer = nil
        let (status, message): (String, String) =
            switch refusal {
            case .urlTooLong: ("414 URI Too Long", "the request line is longer than \(limits.maxURLBytes) bytes")
            case .headTooLarge: ("431 Request Header Fields Too Large", "the request head is larger than \(limits.maxHeaderBytes) bytes")
            case .tooManyFields: ("431 Request Header Fields Too Large", "the request has more than \(limits.maxHeaderFields) header fields")
            case .body: ("413 Content Too Large", "this API accepts no request body")
            }
        let body = "{\"error\":\"\(message)\"}"
        let head = "HTTP/1.1 \(status)\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n"
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: head + body))).whenComplete { _ in
            channel.close(mode: .output, promise: nil)
        }
        lingerTimer = context.eventLoop.scheduleTask(in: .seconds(Self.lingerSeconds)) {
            channel.close(promise: nil)
        }
        context.read()
    }
}

/// Passes over the bytes of an accepted request body, so that the guard resumes at the next request's
/// head: a Content-Length body, or a chunked one (RFC 9112 §7.1; sizes, data, trailer lines).
enum BodySkipper {
    enum Chunk {
        /// Reading a chunk-size line (hex digits, then anything to LF).
        case size(Int64, digits: Int, extension: Bool = false)
        /// Inside chunk data plus its CRLF.
        case data(Int64)
        /// After the last (0) chunk: trailer lines until an empty one. `lineBytes` of the current line.
        case trailer(lineBytes: Int)
    }

    case none
    case length(Int64)
    case chunked(Chunk)

    var isActive: Bool {
        switch self {
        case .none: false
        case .length(let n): n > 0
        case .chunked: true
        }
    }

    /// Consumes body bytes from `view`; returns what is left (the next request's bytes).
    mutating func skip(_ view: ByteBufferView) -> ByteBufferView {
        var view = view
        while !view.isEmpty {
            switch self {
            case .none:
                return view
            case .length(let n):
                let take = Int(min(Int64(view.count), n))
                view = view.dropFirst(take)
                self = n - Int64(take) > 0 ? .length(n - Int64(take)) : .none
                return view
            case .chunked(.data(let n)):
                let take = Int(min(Int64(view.count), n))
                view = view.dropFirst(take)
                self = .chunked(n - Int64(take) > 0 ? .data(n - Int64(take)) : .size(0, digits: 0))
            case .chunked(.size(let size, let digits, let ext)):
                let byte = view.removeFirst()
                if byte == UInt8(ascii: "\n") {
                    // A 0 chunk ends the data; its CRLF is this line's, so trailers follow.
                    self = .chunked(size == 0 && digits > 0 ? .trailer(lineBytes: 0) : .data(size + 2))
                } else if !ext, let d = Self.hexValue(byte), digits < 15 {
                    self = .chunked(.size(size * 16 + Int64(d), digits: digits + 1))
                } else if byte != UInt8(ascii: "\r") {
                    self = .chunked(.size(size, digits: digits, extension: true))
                }
            case .chunked(.trailer(let lineBytes)):
                let byte = view.removeFirst()
                if byte == UInt8(ascii: "\n") {
                    self = lineBytes == 0 ? .none : .chunked(.trailer(lineBytes: 0))
                } else if byte != UInt8(ascii: "\r") {
                    self = .chunked(.trailer(lineBytes: lineBytes + 1))
                }
            }
        }
        return view
    }

    static func hexValue(_ b: UInt8) -> Int? {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): Int(b - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): Int(b - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): Int(b - UInt8(ascii: "A") + 10)
        default: nil
        }
    }
}
