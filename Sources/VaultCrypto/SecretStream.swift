import CSodium

/// Streaming authenticated encryption (libsodium `crypto_secretstream_xchacha20poly1305`).
/// Each chunk is authenticated and ordered; the last one carries the FINAL tag, so truncation,
/// reordering and appended data are all detected. Used for blobs in fixed 64 KiB chunks.
public enum SecretStream {
    public static let headerByteCount = Int(crypto_secretstream_xchacha20poly1305_headerbytes())
    /// Bytes added to every chunk.
    public static let chunkOverhead = Int(crypto_secretstream_xchacha20poly1305_abytes())
    static let tagMessage = UInt8(crypto_secretstream_xchacha20poly1305_tag_message())
    static let tagFinal = UInt8(crypto_secretstream_xchacha20poly1305_tag_final())
}

/// Owns one secretstream state; zeroes it on deinit.
private final class StreamState {
    let pointer: UnsafeMutablePointer<crypto_secretstream_xchacha20poly1305_state>
    init() {
        pointer = .allocate(capacity: 1)
        sodium_memzero(pointer, MemoryLayout<crypto_secretstream_xchacha20poly1305_state>.size)
    }
    deinit {
        sodium_memzero(pointer, MemoryLayout<crypto_secretstream_xchacha20poly1305_state>.size)
        pointer.deallocate()
    }
}

public final class StreamEncryptor {
    private let state = StreamState()
    /// The 24-byte stream header to store before the first chunk.
    public let header: [UInt8]
    private var finished = false

    public init(key: SymmetricKey) {
        precondition(Sodium.ready)
        var h = [UInt8](repeating: 0, count: SecretStream.headerByteCount)
        let statePointer = state.pointer
        key.withUnsafeBytes { k in
            _ = crypto_secretstream_xchacha20poly1305_init_push(
                statePointer, &h, k.baseAddress!.assumingMemoryBound(to: UInt8.self))
        }
        header = h
    }

    /// Encrypts one chunk into `output`, which must hold `plaintext.count + chunkOverhead` bytes.
    /// Returns the number of bytes written.
    @discardableResult
    public func push(
        _ plaintext: UnsafeRawBufferPointer, final isFinal: Bool, associatedData: UnsafeRawBufferPointer,
        into output: UnsafeMutableRawBufferPointer
    ) -> Int {
        precondition(!finished, "push after final chunk")
        precondition(output.count >= plaintext.count + SecretStream.chunkOverhead)
        var written: UInt64 = 0
        _ = crypto_secretstream_xchacha20poly1305_push(
            state.pointer, output.baseAddress!.assumingMemoryBound(to: UInt8.self), &written,
            plaintext.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt64(plaintext.count),
            associatedData.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt64(associatedData.count),
            isFinal ? SecretStream.tagFinal : SecretStream.tagMessage)
        if isFinal { finished = true }
        return Int(written)
    }
}

public final class StreamDecryptor {
    private let state = StreamState()
    public private(set) var finished = false

    public init(key: SymmetricKey, header: [UInt8]) throws(CryptoError) {
        guard header.count == SecretStream.headerByteCount else { throw .malformedInput("stream header length") }
        let rc = key.withUnsafeBytes { k in
            header.withUnsafeBufferPointer { h in
                crypto_secretstream_xchacha20poly1305_init_pull(
                    state.pointer, h.baseAddress!, k.baseAddress!.assumingMemoryBound(to: UInt8.self))
            }
        }
        guard rc == 0 else { throw .authenticationFailed }
    }

    /// Decrypts one chunk into `output` (at least `ciphertext.count - chunkOverhead` bytes).
    /// Returns the plaintext length; `isFinal` tells whether this was the stream's last chunk.
    public func pull(
        _ ciphertext: UnsafeRawBufferPointer, associatedData: UnsafeRawBufferPointer,
        into output: UnsafeMutableRawBufferPointer
    ) throws(CryptoError) -> (count: Int, isFinal: Bool) {
        guard !finished else { throw .trailingData }
        guard ciphertext.count >= SecretStream.chunkOverhead else { throw .truncated }
        precondition(output.count >= ciphertext.count - SecretStream.chunkOverhead)
        var written: UInt64 = 0
        var tag: UInt8 = 0
        let rc = crypto_secretstream_xchacha20poly1305_pull(
            state.pointer, output.baseAddress?.assumingMemoryBound(to: UInt8.self), &written, &tag,
            ciphertext.baseAddress!.assumingMemoryBound(to: UInt8.self), UInt64(ciphertext.count),
            associatedData.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt64(associatedData.count))
        guard rc == 0 else { throw .authenticationFailed }
        if tag == SecretStream.tagFinal { finished = true }
        return (Int(written), finished)
    }
}
