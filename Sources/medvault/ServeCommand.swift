// `medvault serve`: the local DICOMweb API on a Unix domain socket. No TCP listener.
import ArgumentParser
import Foundation
import VaultServer
import VaultStore

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve DICOMweb (QIDO-RS, WADO-RS) on a Unix socket; every request needs a bearer token and is audited.",
        discussion: """
            The socket is DIR/run/medvault.sock (mode 0660) unless --socket is given. There is no TCP listener.
            Remote use: an SSH tunnel to the socket, e.g. ssh -L 8042:/path/to/vault/run/medvault.sock host.
            SIGINT or SIGTERM stops the server after the responses in flight.
            """)

    @OptionGroup var options: VaultOptions
    @Option(help: ArgumentHelp("Socket path.", valueName: "path")) var socket: String?
    @Option(help: ArgumentHelp("Also listen on this loopback address for browser viewers (127.0.0.1:PORT or [::1]:PORT only).", valueName: "host:port"))
    var http: String?

    func validate() throws {
        if let http {
            do { _ = try LoopbackAddress(parsing: http) } catch { throw ValidationError(error.description) }
        }
    }

    func run() throws {
        try MedVault.guarded {
            let vault = try options.open()
            let loopback = try http.map { try LoopbackAddress(parsing: $0) }
            let server = VaultAPIServer(vault: vault, socketPath: socket, http: loopback)
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
