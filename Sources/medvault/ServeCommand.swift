// `medvault serve`: the local DICOMweb API on a Unix domain socket, and optionally on a loopback TCP port.
import ArgumentParser
import Foundation
import VaultServer
import VaultStore

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve DICOMweb (QIDO-RS, WADO-RS) on a Unix socket; every request needs a bearer token and is audited.",
        discussion: """
            The socket is DIR/run/medvault.sock (mode 0660) unless --socket is given. A TCP listener exists only
            with --http, on a loopback address (127.0.0.1:PORT, [::1]:PORT); any other address is refused.
            Remote use: an SSH tunnel to the socket, e.g. ssh -L 8042:/path/to/vault/run/medvault.sock host.
            Each listener closes connections that stay idle or send their request too slowly, caps the number of
            connections it serves at once (the socket's cap is separate from the TCP listener's), and refuses an
            oversized request line (414) or head (431) by closing the connection.
            Browser viewers on another origin need --allow-origin for each origin (CORS; preflights are answered
            before authentication). The TCP listener answers only requests whose Host is localhost, 127.0.0.1 or
            [::1] (421 otherwise), against DNS rebinding.
            SIGINT or SIGTERM stops the server after the responses in flight.
            """)

    @OptionGroup var options: VaultOptions
    @Option(help: ArgumentHelp("Socket path.", valueName: "path")) var socket: String?
    @Option(help: ArgumentHelp("Also listen on this loopback address for browser viewers (127.0.0.1:PORT or [::1]:PORT only).", valueName: "host:port"))
    var http: String?
    @Option(help: ArgumentHelp("Seconds a new connection has to send its request line and headers.", valueName: "s"))
    var headerTimeout: Double = ServerLimits.defaults.headerTimeout
    @Option(help: ArgumentHelp("Seconds a connection may stay open with no request (or wait for the next request's headers).", valueName: "s"))
    var idleTimeout: Double = ServerLimits.defaults.idleTimeout
    @Option(help: ArgumentHelp("Seconds a response may wait for a client that stopped reading.", valueName: "s"))
    var sendTimeout: Double = ServerLimits.defaults.sendTimeout
    @Option(help: ArgumentHelp("Connections served at once on the --http listener.", valueName: "n"))
    var maxHttpConnections: Int = ServerLimits.defaults.maxHTTPConnections
    @Option(help: ArgumentHelp("Connections served at once on the Unix socket.", valueName: "n"))
    var maxSocketConnections: Int = ServerLimits.defaults.maxSocketConnections
    @Option(help: ArgumentHelp("Longest request line in bytes (414 beyond).", valueName: "bytes"))
    var maxUrlBytes: Int = ServerLimits.defaults.maxURLBytes
    @Option(help: ArgumentHelp("Largest request head in bytes (431 beyond).", valueName: "bytes"))
    var maxHeaderBytes: Int = ServerLimits.defaults.maxHeaderBytes
    @Option(help: ArgumentHelp("Largest STOW-RS request in bytes (413 beyond).", valueName: "bytes"))
    var maxStoreBytes: Int64 = ServerLimits.defaults.maxStoreBytes
    @Option(help: ArgumentHelp("Bytes of one STOW-RS request held in memory; larger instances are sealed on arrival into unnamed files in the vault's tmp directory.", valueName: "bytes"))
    var storeMemoryBytes: Int64 = ServerLimits.defaults.storeMemoryBytes
    @Option(
        name: .customLong("allow-origin"),
        help: ArgumentHelp(
            "Let a browser viewer served from this origin read answers (CORS), e.g. http://localhost:3000; repeatable. None by default.",
            valueName: "url"))
    var allowOrigins: [String] = []
    @Flag(help: "Send Cross-Origin-Opener-Policy, -Embedder-Policy and -Resource-Policy headers, for viewers that need SharedArrayBuffer.")
    var crossOriginIsolation = false

    func browserAccess() throws(BrowserAccess.OriginError) -> BrowserAccess {
        try BrowserAccess(origins: allowOrigins, crossOriginIsolation: crossOriginIsolation)
    }

    var limits: ServerLimits {
        ServerLimits(
            headerTimeout: headerTimeout, idleTimeout: idleTimeout, sendTimeout: sendTimeout,
            maxHTTPConnections: maxHttpConnections, maxSocketConnections: maxSocketConnections,
            maxURLBytes: maxUrlBytes, maxHeaderBytes: maxHeaderBytes, maxStoreBytes: maxStoreBytes,
            storeMemoryBytes: storeMemoryBytes)
    }

    func validate() throws {
        for (name, value) in [("--header-timeout", headerTimeout), ("--idle-timeout", idleTimeout), ("--send-timeout", sendTimeout)]
        where !(value > 0 && value <= 86_400) {
            throw ValidationError("\(name) must be between 0 and 86400 seconds")
        }
        for (name, value) in [("--max-http-connections", maxHttpConnections), ("--max-socket-connections", maxSocketConnections)]
        where !(1...100_000).contains(value) {
            throw ValidationError("\(name) must be between 1 and 100000")
        }
        if !(256...1 << 20).contains(maxUrlBytes) { throw ValidationError("--max-url-bytes must be between 256 and 1048576") }
        if !(1024...1 << 20).contains(maxHeaderBytes) || maxHeaderBytes < maxUrlBytes {
            throw ValidationError("--max-header-bytes must be between 1024 and 1048576, and at least --max-url-bytes")
        }
        if !(1024...(Int64(1) << 40)).contains(maxStoreBytes) { throw ValidationError("--max-store-bytes must be between 1024 and 1099511627776") }
        if !(0...(Int64(1) << 40)).contains(storeMemoryBytes) { throw ValidationError("--store-memory-bytes must be between 0 and 1099511627776") }
        if let http {
            do { _ = try LoopbackAddress(parsing: http) } catch { throw ValidationError(error.description) }
        }
        do { _ = try browserAccess() } catch { throw ValidationError(error.description) }
    }

    func run() throws {
        try MedVault.guarded {
            let vault = try options.open()
            let loopback = try http.map { try LoopbackAddress(parsing: $0) }
            let server = VaultAPIServer(vault: vault, socketPath: socket, http: loopback, limits: limits, browser: try browserAccess())
            let done = DispatchSemaphore(value: 0)
            let failure = FailureBox()
            Task {
                do {
                    try await server.run(onReady: {
                        FileHandle.standardError.write(Data("medvault: serving on \(server.socketPath)\n".utf8))
                    })
                } catch {
                    failure.set(error)
                }
                done.signal()
            }
            done.wait()
            if let error = failure.get() { throw error }
        }
    }
}

final class FailureBox: @unchecked Sendable {
    private let lock = NSLock()
    private var error: (any Error)?
    func set(_ e: any Error) { lock.lock(); error = e; lock.unlock() }
    func get() -> (any Error)? { lock.lock(); defer { lock.unlock() }; return error }
}
