// Helpers shared by the test targets. Everything here works on real files and real processes.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The package's root directory (two levels above this file).
public let packageRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.path
}()

/// A fresh directory under the system temp dir, removed by `remove()`.
public struct TempDir: Sendable {
    public let path: String
    public init(_ label: String = "medvault-test") {
        let template = (NSTemporaryDirectory() as NSString).appendingPathComponent("\(label)-XXXXXX")
        var bytes = Array(template.utf8CString)
        let made = bytes.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil, "mkdtemp failed")
        path = String(cString: bytes.withUnsafeBufferPointer { $0.baseAddress! })
    }
    public func sub(_ name: String) -> String { path + "/" + name }
    public func remove() { try? FileManager.default.removeItem(atPath: path) }
}

public struct ProcessResult: Sendable {
    public let status: Int32
    public let stdout: String
    public let stderr: String
}

/// Runs a program to completion. `stdin` (if any) is written to its standard input.
@discardableResult
public func run(
    _ executable: String, _ arguments: [String], environment: [String: String]? = nil, stdin: String? = nil,
    currentDirectory: String? = nil
) throws -> ProcessResult {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = arguments
    if let environment { p.environment = environment }
    if let currentDirectory { p.currentDirectoryURL = URL(fileURLWithPath: currentDirectory) }
    let out = Pipe(), err = Pipe(), inp = Pipe()
    p.standardOutput = out
    p.standardError = err
    p.standardInput = inp
    try p.run()
    if let stdin { inp.fileHandleForWriting.write(Data(stdin.utf8)) }
    try? inp.fileHandleForWriting.close()
    // Drain both pipes concurrently so a chatty child cannot block.
    let errData = LockedData()
    let t = Thread { errData.set(err.fileHandleForReading.readDataToEndOfFile()) }
    t.start()
    let o = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    while !errData.isSet { usleep(1000) }
    return ProcessResult(
        status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: errData.get(), as: UTF8.self))
}

final class LockedData: @unchecked Sendable {
    private let lock = NSLock()
    private var data = Data()
    private var done = false
    func set(_ d: Data) { lock.lock(); data = d; done = true; lock.unlock() }
    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return done }
    func get() -> Data { lock.lock(); defer { lock.unlock() }; return data }
}

/// One file of the generated corpus, as tools/gen-dicom.py describes it in manifest.json.
public struct CorpusFile: Decodable, Sendable {
    public let path: String
    public let kind: String
    public let reason: String?
    public let transfer_syntax: String?
    public let patient_name: String?
    public let patient_id: String?
    public let birth_date: String?
    public let study_uid: String?
    public let series_uid: String?
    public let sop_uid: String?
    public let modality: String?
    public let study_date: String?
    public let accession: String?
    public let referring: String?
    public let institution: String?
    public let size: Int?
    public let sha256: String?
    public var isValid: Bool { kind == "valid" }
}

struct CorpusManifest: Decodable { let files: [CorpusFile] }

/// The test corpus, generated once per test process by tools/gen-dicom.py (pydicom + DCMTK).
/// Treat it as read-only; copy files you want to change.
public struct Corpus: Sendable {
    public let root: String
    public let files: [CorpusFile]
    public var valid: [CorpusFile] { files.filter(\.isValid) }
    public var malformed: [CorpusFile] { files.filter { !$0.isValid } }
    public func path(_ f: CorpusFile) -> String { root + "/" + f.path }

    public static let shared: Corpus = {
        let dir = TempDir("medvault-corpus")
        return generate(["corpus", dir.path])
    }()

    /// Runs tools/gen-dicom.py with `arguments` (mode, output dir, options) and reads its manifest.
    public static func generate(_ arguments: [String]) -> Corpus {
        let script = packageRoot + "/tools/gen-dicom.py"
        guard let r = try? run("/usr/bin/env", ["python3", script] + arguments), r.status == 0 else {
            fatalError("tools/gen-dicom.py failed; run tools/test, which installs pydicom and DCMTK")
        }
        let root = arguments[1]
        guard let data = FileManager.default.contents(atPath: root + "/manifest.json"),
            let m = try? JSONDecoder().decode(CorpusManifest.self, from: data)
        else { fatalError("no manifest.json from tools/gen-dicom.py") }
        return Corpus(root: root, files: m.files)
    }
}

/// SHA-256 of a file, through coreutils (independent of the code under test).
public func sha256(ofFile path: String) throws -> String {
    let r = try run("/usr/bin/sha256sum", [path])
    return String(r.stdout.prefix(64))
}

/// Every regular file under `dir`, recursively.
public func allFiles(under dir: String) -> [String] {
    guard let e = FileManager.default.enumerator(atPath: dir) else { return [] }
    var out: [String] = []
    while let rel = e.nextObject() as? String {
        var isDir: ObjCBool = false
        let p = dir + "/" + rel
        if FileManager.default.fileExists(atPath: p, isDirectory: &isDir), !isDir.boolValue { out.append(p) }
    }
    return out.sorted()
}

/// Whether `needle` occurs anywhere in the file's bytes.
public func fileContains(_ path: String, _ needle: [UInt8]) -> Bool {
    guard !needle.isEmpty, let data = FileManager.default.contents(atPath: path) else { return false }
    return data.range(of: Data(needle)) != nil
}

/// The `medvault` executable built next to the test bundle.
public let medvaultBinary: String = {
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
    for _ in 0..<4 {
        let candidate = dir.appendingPathComponent("medvault").path
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        dir.deleteLastPathComponent()
    }
    return packageRoot + "/.build/debug/medvault"
}()

/// The environment for running `medvault` against one vault, passphrase in MEDVAULT_PASSPHRASE.
public func medvaultEnvironment(vault: String, passphrase: String = "correct horse battery staple") -> [String: String] {
    var env = ProcessInfo.processInfo.environment
    env["MEDVAULT_PASSPHRASE"] = passphrase
    env["MEDVAULT_VAULT"] = vault
    return env
}

/// A small real filesystem for disk-full tests: a tmpfs of `size` (e.g. "4m") mounted at `dir/small`
/// (root only). Returns its path; the caller unmounts it (`unmountTmpfs`) before removing `dir`.
public func mountSmallTmpfs(in dir: TempDir, size: String) throws -> String {
    let small = dir.sub("small")
    try FileManager.default.createDirectory(atPath: small, withIntermediateDirectories: true)
    let r = try run("/bin/mount", ["-t", "tmpfs", "-o", "size=\(size)", "tmpfs", small])
    guard r.status == 0 else { throw TmpfsUnavailable(reason: r.stderr) }
    return small
}

public func unmountTmpfs(_ path: String) { _ = try? run("/bin/umount", [path]) }

public struct TmpfsUnavailable: Error { public let reason: String }
