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

    public init(
        headerTimeout: Double = 10, idleTimeout: Double = 60, sendTimeout: Double = 60,
        maxHTTPConnections: Int = 64, maxSocketConnections: Int = 256,
        maxURLBytes: Int = 16 * 1024, maxHeaderBytes: Int = 32 * 1024, maxHeaderFields: Int = 100
    ) {
        self.headerTimeout = headerTimeout
        self.idleTimeout = idleTimeout
        self.sendTimeout = sendTimeout
        self.maxHTTPConnections = maxHTTPConnections
        self.maxSocketConnections = maxSocketConnections
        self.maxURLBytes = maxURLBytes
        self.maxHeaderBytes = maxHeaderBytes
        self.maxHeaderFields = maxHeaderFields
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
/// (414, 431), refuses request bodies (413: the API serves GET only), closes a connection whose first
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
    private var declaresBody = false
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
        for byte in buffer.readableBytesView {
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
                    // The empty line: the head is complete.
                    let body = declaresBody
                    resetHead()
                    return body ? .body : nil
                }
                // Empty lines before the request line are ignored (RFC 9112 §2.2), but counted.
            } else if lineIndex == 0 {
                lineIndex = 1
            } else {
                fields += 1
                if fields > limits.maxHeaderFields { return .tooManyFields }
                if Self.declaresBody(line, truncated: lineBytes > Self.linePrefix) { declaresBody = true }
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
        declaresBody = false
        inHead = false
        headerTimer?.cancel()
        headerTimer = nil
    }

    /// Whether a header line announces a body: Transfer-Encoding, or a Content-Length other than 0.
    private static func declaresBody(_ line: [UInt8], truncated: Bool) -> Bool {
        guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { return false }
        let name = String(decoding: line[..<colon], as: UTF8.self).lowercased()
        let value = String(decoding: line[(colon + 1)...], as: UTF8.self).trimmingCharacters(in: .whitespaces)
        switch name {
        case "transfer-encoding": return true
        case "content-length": return truncated || value.isEmpty || value.contains(where: { $0 != "0" })
        default: return false
        }
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
