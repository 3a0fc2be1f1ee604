// Terminal I/O for the CLI: passphrase sources, progress bar, plain output.
import Foundation
import VaultCrypto
import VaultStore
#if canImport(Glibc)
import Glibc
#endif

/// A user-facing failure: printed as `medvault: <message>`, exit status 2.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ message: String) { description = message }
}

enum Console {
    static var stderrIsTerminal: Bool { isatty(STDERR_FILENO) == 1 }

    static func error(_ s: String) {
        // Not FileHandle.write, which traps when the write fails (stderr redirected to a full disk):
        // a message that cannot be written is lost, the command's exit status still says what happened.
        let bytes = Array((s + "\n").utf8)
        var done = 0
        while done < bytes.count {
            let n = bytes[done...].withUnsafeBytes { Glibc.write(2, $0.baseAddress, $0.count) }
            if n > 0 { done += n } else if n < 0 && errno == EINTR { continue } else { break }
        }
    }

    /// Prints JSON (sorted keys) on stdout.
    static func json(_ object: Any) {
        if let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]) {
            FileHandle.standardOutput.write(data)
            FileHandle.standardOutput.write(Data("\n".utf8))
        }
    }
}

/// Where the passphrase comes from, in order: `--passphrase-fd`, `--passphrase-file`,
/// the MEDVAULT_PASSPHRASE environment variable, then an interactive prompt on /dev/tty.
/// Never from argv: a value there is visible to every user in `ps`.
enum PassphraseSource {
    static let environmentVariable = "MEDVAULT_PASSPHRASE"

    /// The source of a *new* passphrase (`passphrase change`, `key add-slot`): its own file option, its
    /// own environment variable, or a prompt asked twice.
    static let newPassphraseVariable = "MEDVAULT_NEW_PASSPHRASE"

    static func readNew(file: String?) throws -> SecureBytes {
        try read(file: file, fd: nil, confirm: true, prompt: "New passphrase: ", environment: newPassphraseVariable)
    }

    static func read(
        file: String?, fd: Int32?, confirm: Bool, prompt: String = "Vault passphrase: ", environment: String = environmentVariable
    ) throws -> SecureBytes {
        if let fd {
            return try fromDescriptor(fd, name: "file descriptor \(fd)")
        }
        if let file {
            let d = Glibc.open(file, O_RDONLY | O_CLOEXEC)
            guard d >= 0 else { throw CLIError("cannot read passphrase file \(file): \(String(cString: strerror(errno)))") }
            defer { close(d) }
            return try fromDescriptor(d, name: file)
        }
        if let value = ProcessInfo.processInfo.environment[environment] {
            var bytes = Array(value.utf8)
            guard !bytes.isEmpty else { throw CLIError("\(environment) is set but empty") }
            return try SecureBytes(consuming: &bytes)
        }
        let first = try promptTTY(prompt)
        if confirm {
            let second = try promptTTY("Repeat passphrase: ")
            guard first.equals(second) else { throw CLIError("the two passphrases differ; nothing was changed") }
        }
        return first
    }

    /// Reads everything from `fd` (the first line only), without ever holding it in a Swift String.
    private static func fromDescriptor(_ fd: Int32, name: String) throws -> SecureBytes {
        var bytes: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        defer { wipe(&buf) }
        while true {
            let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress!, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                wipe(&bytes)
                throw CLIError("cannot read passphrase from \(name): \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            bytes += buf[0..<n]
            if bytes.count > 64 * 1024 { wipe(&bytes); throw CLIError("passphrase from \(name) is too long") }
        }
        if let nl = bytes.firstIndex(of: 0x0A) {
            var rest = Array(bytes[nl...])
            wipe(&rest)
            bytes.removeSubrange(nl...)
        }
        if bytes.last == 0x0D { bytes.removeLast() }
        guard !bytes.isEmpty else { throw CLIError("the passphrase from \(name) is empty") }
        return try SecureBytes(consuming: &bytes)
    }

    /// Prompts on the controlling terminal with echo off.
    private static func promptTTY(_ prompt: String) throws -> SecureBytes {
        let tty = Glibc.open("/dev/tty", O_RDWR | O_CLOEXEC)
        guard tty >= 0 else {
            throw CLIError(
                "no passphrase given and no terminal to ask on: use --passphrase-file FILE, --passphrase-fd N, or set \(environmentVariable)")
        }
        defer { close(tty) }
        _ = prompt.withCString { write(tty, $0, strlen($0)) }
        var old = termios()
        let haveTermios = tcgetattr(tty, &old) == 0
        if haveTermios {
            var quiet = old
            quiet.c_lflag &= ~tcflag_t(ECHO)
            _ = tcsetattr(tty, TCSAFLUSH, &quiet)
        }
        defer {
            if haveTermios { var o = old; _ = tcsetattr(tty, TCSAFLUSH, &o) }
            _ = write(tty, "\n", 1)
        }
        var bytes: [UInt8] = []
        var c: UInt8 = 0
        while Glibc.read(tty, &c, 1) == 1 && c != 0x0A {
            bytes.append(c)
        }
        if bytes.last == 0x0D { bytes.removeLast() }
        guard !bytes.isEmpty else { throw CLIError("empty passphrase") }
        return try SecureBytes(consuming: &bytes)
    }
}

/// A one-line progress bar on stderr, redrawn at most ten times a second; silent when stderr is not a terminal.
final class ProgressBar {
    private let label: String
    private let enabled: Bool
    private let started = Date()
    private var lastDraw = Date.distantPast
    private var drawn = false

    init(label: String, enabled: Bool = Console.stderrIsTerminal) {
        self.label = label
        self.enabled = enabled
    }

    func update(done: Int, total: Int, bytes: Int64, totalBytes: Int64, force: Bool = false) {
        guard enabled else { return }
        let now = Date()
        guard force || now.timeIntervalSince(lastDraw) >= 0.1 else { return }
        lastDraw = now
        let elapsed = max(now.timeIntervalSince(started), 0.001)
        let fraction = totalBytes > 0 ? Double(bytes) / Double(totalBytes) : (total > 0 ? Double(done) / Double(total) : 1)
        let width = 24
        let filled = min(width, Int(fraction * Double(width)))
        let bar = String(repeating: "█", count: filled) + String(repeating: "░", count: width - filled)
        let rate = Double(bytes) / elapsed
        let eta = rate > 0 && totalBytes > bytes ? Double(totalBytes - bytes) / rate : 0
        let line = String(
            format: "\r%@ %@ %d/%d files  %@/%@  %@/s  ETA %@ ", label, bar, done, total, Format.megabytes(bytes),
            Format.megabytes(totalBytes), Format.megabytes(Int64(rate)), Format.duration(eta))
        FileHandle.standardError.write(Data(line.utf8))
        drawn = true
    }

    func finish() {
        guard enabled, drawn else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[2K".utf8))
    }
}

enum Format {
    static func megabytes(_ bytes: Int64) -> String { String(format: "%.1f MB", Double(bytes) / 1_000_000) }
    static func duration(_ s: Double) -> String {
        let t = Int(s.rounded())
        return t >= 3600 ? String(format: "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60) : String(format: "%d:%02d", t / 60, t % 60)
    }

    /// A plain text table with a header row.
    static func table(_ header: [String], _ rows: [[String]]) -> String {
        var widths = header.map { $0.count }
        for r in rows { for (i, c) in r.enumerated() where i < widths.count { widths[i] = max(widths[i], c.count) } }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
                .joined(separator: "  ").trimmingCharacters(in: .whitespaces)
        }
        return ([line(header)] + rows.map(line)).joined(separator: "\n")
    }
}
