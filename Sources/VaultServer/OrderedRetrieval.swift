// WADO-RS of several instances (issue 12): a few threads decrypt the next instances at the same time,
// each instance a bounded number of bytes ahead of the client, and the response takes their bytes in
// order. Each thread works for the whole answer (not one per instance), writes the multipart framing
// into the same buffers as the bytes, and hands over buffers of up to 256 KiB; the response takes
// every buffer ready at once (several small instances go out in one write).
import Foundation
import NIOCore
import VaultFormats
import VaultStore

/// How far a retrieval may run ahead of its client. The clear bytes waiting to be sent never exceed
/// `bound`, whatever the number or the size of the instances.
struct ReadAhead: Sendable, Equatable {
    /// Decrypting threads (no more than the answer has instances).
    var workers: Int
    /// Instances being decrypted or waiting to be sent, the one being sent included (≥ `workers`).
    var instances: Int
    /// Unsent bytes one instance may hold; its thread waits for the client beyond that.
    var bytesPerInstance: Int
    /// The largest hand-off to the response (≤ `bytesPerInstance`).
    var segment: Int

    /// One thread per core (2 to 4), one instance more in flight than threads, 1 MiB per instance in
    /// 256 KiB hand-offs: at most 3 MiB waiting on this machine.
    static let standard: ReadAhead = {
        let workers = min(4, max(2, ProcessInfo.processInfo.activeProcessorCount))
        return ReadAhead(workers: workers, instances: workers + 1, bytesPerInstance: 1 << 20, segment: 256 << 10)
    }()

    /// The most clear bytes held for the response at once.
    var bound: Int { instances * bytesPerInstance }
}

/// The framing of a multipart/related answer of application/dicom parts: each part's size (file meta
/// included) and what goes around it. Known before the response starts (Content-Length, audit).
struct PartLayout: Sendable {
    /// The PS3.10 file meta sent in front of each instance (empty for one stored with its own).
    let metas: [[UInt8]]
    /// Each part's size: the instance's clear size plus its file meta.
    let sizes: [Int64]
    private let lead: [UInt8], tail: [UInt8]

    init(boundary: String, plainSizes: [Int64], metas: [[UInt8]]) {
        self.metas = metas
        sizes = zip(plainSizes, metas).map { $0 + Int64($1.count) }
        lead = Array("--\(boundary)\r\nContent-Type: application/dicom\r\nContent-Length: ".utf8)
        tail = Array("\r\n--\(boundary)--\r\n".utf8)
    }

    /// The clear bytes of the instances sent, file meta included (the audit record's bytes).
    var bytes: Int64 { sizes.reduce(0, +) }

    /// What comes before part `i`'s bytes: the delimiter (after a CRLF that ends the previous part),
    /// the part's headers, and its file meta.
    func head(_ i: Int) -> [UInt8] {
        (i == 0 ? [] : [13, 10]) + lead + Array(String(sizes[i]).utf8) + [13, 10, 13, 10] + metas[i]
    }

    /// What follows part `i`'s bytes: the close delimiter after the last part, nothing otherwise.
    func trailer(_ i: Int) -> [UInt8] { i == sizes.count - 1 ? tail : [] }

    /// The whole body's length.
    var contentLength: Int {
        sizes.indices.reduce(0) { $0 + head($1).count + Int(sizes[$1]) - metas[$1].count + trailer($1).count }
    }
}

/// One multipart retrieval: starts its threads when made, stops them when cancelled or released
/// (a HEAD request drops the body unread).
final class OrderedRetrieval: Sendable {
    private let core: RetrievalCore

    /// Starts the threads: first the Part 10 checks of all instances, shared among them, then the
    /// instances themselves in order.
    init(_ source: RetrievalSource, boundary: String, limits: ReadAhead = .standard) {
        core = RetrievalCore(source, boundary: boundary, limits: limits)
        let core = self.core
        for _ in 0..<min(limits.workers, source.count) {
            core.started()
            Thread { core.run() }.start()
        }
    }

    deinit { core.cancel() }

    /// The answer's framing, once every instance's Part 10 check is done.
    func layout() async -> PartLayout { await core.layout() }

    /// The next buffers of the body, in order (every buffer ready at that moment); nil at the end.
    /// Throws the error that stopped an instance (e.g. `BlobError.tampered`) once the bytes before it are taken.
    func next() async throws -> [ByteBuffer]? { try await core.next() }

    /// Stops the threads; `next()` throws `CancellationError` from then on.
    func cancel() { core.cancel() }

    /// The most clear bytes that waited for the response at once so far (≤ `ReadAhead.bound`).
    var highWaterMark: Int { core.highWaterMark }

    /// For tests: the number of this retrieval's threads still running, readable after it is released.
    var runningThreads: @Sendable () -> Int {
        let core = self.core
        return { core.running }
    }
}

/// The state the threads and the response share. All mutable state is guarded by `condition`: the
/// threads wait on it for room, the response awaits a continuation that the threads resume.
private final class RetrievalCore: @unchecked Sendable {
    private struct Slot {
        var buffers: [ByteBuffer] = []
        var bytes = 0
        var done = false
        var error: (any Error)?
    }

    let source: RetrievalSource
    let limits: ReadAhead
    private let boundary: String
    private let condition = NSCondition()
    // Guarded by `condition`.
    private var metas: [[UInt8]]
    private var checksClaimed = 0, checksDone = 0
    private var parts: PartLayout?
    private var layoutWaiter: CheckedContinuation<Void, Never>?
    private var slots: [Int: Slot] = [:]
    private var claimed = 0, head = 0
    private var buffered = 0, highWater = 0
    private var cancelled = false
    private var bodyWaiter: CheckedContinuation<Void, Never>?
    private var threads = 0

    init(_ source: RetrievalSource, boundary: String, limits: ReadAhead) {
        precondition(limits.workers >= 1 && limits.instances >= limits.workers && limits.segment <= limits.bytesPerInstance)
        self.source = source
        self.limits = limits
        self.boundary = boundary
        metas = Array(repeating: [], count: source.count)
        if source.count == 0 { parts = PartLayout(boundary: boundary, plainSizes: [], metas: []) }
    }

    private func locked<R>(_ body: () throws -> R) rethrows -> R {
        condition.lock()
        defer { condition.unlock() }
        return try body()
    }

    var highWaterMark: Int { locked { highWater } }
    var running: Int { locked { threads } }
    func started() { locked { threads += 1 } }

    // MARK: The threads

    /// A thread's work: Part 10 checks while any are left, then whole instances while any are left.
    func run() {
        defer { locked { threads -= 1 } }
        while let i = claimCheck() { checked(i, source.fileMeta(i)) }
        guard let parts = awaitLayout() else { return }
        while let i = claim() { decrypt(i, parts) }
    }

    private func claimCheck() -> Int? {
        locked {
            guard !cancelled, checksClaimed < source.count else { return nil }
            defer { checksClaimed += 1 }
            return checksClaimed
        }
    }

    private func checked(_ i: Int, _ meta: [UInt8]) {
        let waiter: CheckedContinuation<Void, Never>? = locked {
            metas[i] = meta
            checksDone += 1
            guard checksDone == source.count else { return nil }
            parts = PartLayout(boundary: boundary, plainSizes: (0..<source.count).map(source.plainSize), metas: metas)
            condition.broadcast()
            defer { layoutWaiter = nil }
            return layoutWaiter
        }
        waiter?.resume()
    }

    /// The layout once every check is done; nil if cancelled first.
    private func awaitLayout() -> PartLayout? {
        locked {
            while parts == nil && !cancelled { condition.wait() }
            return cancelled ? nil : parts
        }
    }

    /// The next instance to decrypt, once it is within `limits.instances` of the one being sent.
    private func claim() -> Int? {
        locked {
            while !cancelled && claimed < source.count && claimed >= head + limits.instances { condition.wait() }
            guard !cancelled, claimed < source.count else { return nil }
            slots[claimed] = Slot()
            defer { claimed += 1 }
            return claimed
        }
    }

    /// Decrypts instance `i` with its framing into buffers of at most `limits.segment` bytes.
    private func decrypt(_ i: Int, _ parts: PartLayout) {
        let head = parts.head(i), trailer = parts.trailer(i)
        var remaining = head.count + Int(source.plainSize(i)) + trailer.count
        var buffer = ByteBuffer()
        func append(_ bytes: UnsafeRawBufferPointer) throws {
            // More bytes than the catalog's size would break the framing: the blob is not the recorded one.
            guard bytes.count <= remaining else { throw BlobError.tampered }
            var from = 0
            while from < bytes.count {
                if buffer.writableBytes == 0 {
                    if buffer.readableBytes > 0 { try publish(i, buffer) }
                    buffer = ByteBufferAllocator().buffer(capacity: max(1, min(limits.segment, remaining)))
                }
                let n = min(buffer.writableBytes, bytes.count - from)
                buffer.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[from..<(from + n)]))
                from += n
                remaining -= n
            }
        }
        do {
            try head.withUnsafeBytes(append)
            try source.read(i, sink: append)
            try trailer.withUnsafeBytes(append)
            if buffer.readableBytes > 0 { try publish(i, buffer) }
            finish(i, nil)
        } catch {
            finish(i, error)
        }
    }

    /// Hands a buffer of instance `i` to the response, waiting while the instance holds its share.
    private func publish(_ i: Int, _ buffer: ByteBuffer) throws {
        let n = buffer.readableBytes
        let waiter: CheckedContinuation<Void, Never>? = try locked {
            while !cancelled, let s = slots[i], s.bytes > 0, s.bytes + n > limits.bytesPerInstance { condition.wait() }
            if cancelled { throw CancellationError() }
            slots[i]?.buffers.append(buffer)
            slots[i]?.bytes += n
            buffered += n
            highWater = max(highWater, buffered)
            return wakeBody(for: i)
        }
        waiter?.resume()
    }

    private func finish(_ i: Int, _ error: (any Error)?) {
        let waiter: CheckedContinuation<Void, Never>? = locked {
            slots[i]?.done = true
            slots[i]?.error = error
            return wakeBody(for: i)
        }
        waiter?.resume()
    }

    /// The response's continuation, taken if it waits for instance `i` (call with the lock held).
    private func wakeBody(for i: Int) -> CheckedContinuation<Void, Never>? {
        guard i == head, let w = bodyWaiter else { return nil }
        bodyWaiter = nil
        return w
    }
}

extension RetrievalCore {
    // MARK: The response

    /// Waits for the Part 10 checks and returns the layout.
    func layout() async -> PartLayout {
        while true {
            if let parts = locked({ parts }) { return parts }
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let ready = locked {
                    if parts != nil || cancelled { return true }
                    layoutWaiter = c
                    return false
                }
                if ready { c.resume() }
            }
            if locked({ cancelled && parts == nil }) { return PartLayout(boundary: "", plainSizes: [], metas: []) }
        }
    }

    func next() async throws -> [ByteBuffer]? {
        while true {
            switch try take() {
            case .buffers(let b): return b
            case .end: return nil
            case .wait:
                await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                    if locked({ park(c) }) { c.resume() }
                }
            }
        }
    }

    private enum Taken { case buffers([ByteBuffer]), end, wait }

    /// Every buffer ready from the instance being sent on, moving past the instances that are done.
    /// An instance that failed is thrown once the buffers before its failure have been taken.
    private func take() throws -> Taken {
        try locked {
            var out: [ByteBuffer] = []
            while head < source.count, var slot = slots[head] {
                if !slot.buffers.isEmpty {
                    out += slot.buffers
                    buffered -= slot.bytes
                    slot.buffers = []
                    slot.bytes = 0
                    slots[head] = slot
                    condition.broadcast()
                }
                guard slot.done else { break }
                if let error = slot.error {
                    if out.isEmpty { throw error }
                    break
                }
                slots[head] = nil
                head += 1
                condition.broadcast()
            }
            if !out.isEmpty { return .buffers(out) }
            if cancelled { throw CancellationError() }
            return head == source.count ? .end : .wait
        }
    }

    /// Parks the response until instance `head` has news; true if it has some already (lock held).
    private func park(_ c: CheckedContinuation<Void, Never>) -> Bool {
        if cancelled || head == source.count { return true }
        if let slot = slots[head], !slot.buffers.isEmpty || slot.done { return true }
        bodyWaiter = c
        return false
    }

    func cancel() {
        let waiters: [CheckedContinuation<Void, Never>] = locked {
            cancelled = true
            condition.broadcast()
            defer { bodyWaiter = nil; layoutWaiter = nil }
            return [bodyWaiter, layoutWaiter].compactMap { $0 }
        }
        for w in waiters { w.resume() }
    }
}
