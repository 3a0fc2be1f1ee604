// The import pipeline: parse (DCMTK) → seal into a blob in vault/tmp → group commit (fsync, rename,
// catalog transaction) → optional read-back and removal of the source. See docs/design.md, "Import".
public import VaultKeys
import VaultFormats
import VaultIO
import Foundation
import VaultCatalog
import VaultCrypto
import VaultDICOM
#if canImport(Glibc)
import Glibc
#endif

public struct ImportOptions: Sendable {
    /// Delete each original once its blob is committed and has been read back and matched.
    public var removeSource = false
    /// Files per group commit (one pair of catalog transactions and directory fsyncs per group).
    public var batchFiles = 200
    /// Clear bytes per group commit.
    public var batchBytes: Int64 = 256 << 20
    /// Refuse instances of any other study (STOW-RS to …/studies/{uid}).
    public var requiredStudyUID: String?
    /// A received instance sealed on disk (`IncomingInstance`) larger than this is parsed in two passes,
    /// holding at most this many bytes in memory; a smaller one is read whole (tests lower it).
    var streamHeaderLimit = DICOMParser.streamHeaderLimit
    public init(removeSource: Bool = false, batchFiles: Int = 200) {
        self.removeSource = removeSource
        self.batchFiles = max(1, batchFiles)
    }
}

/// What happened to one input file.
public enum ImportOutcome: Sendable, Equatable {
    case imported
    /// The same instance, byte for byte, is already in the vault.
    case alreadyPresent
    /// Another file with this SOP Instance UID is already in the vault; the first was kept.
    case conflict(String)
    /// Not DICOM, malformed, or missing a required attribute: skipped.
    case rejected(String)
    /// Deliberately left out and not an error: a DICOMDIR media index (the images it lists are imported).
    case skipped(String)
    /// An I/O error on this file.
    case failed(String)

    public var isFailure: Bool {
        switch self {
        case .imported, .alreadyPresent, .skipped: false
        case .conflict, .rejected, .failed: true
        }
    }

    public var label: String {
        switch self {
        case .imported: "imported"
        case .alreadyPresent: "already-present"
        case .conflict: "conflict"
        case .rejected: "rejected"
        case .skipped: "skipped"
        case .failed: "failed"
        }
    }

    public var reason: String? {
        switch self {
        case .imported, .alreadyPresent: nil
        case .conflict(let r), .rejected(let r), .failed(let r), .skipped(let r): r
        }
    }
}

public struct ImportFileResult: Sendable, Equatable {
    public let path: String
    public var outcome: ImportOutcome
    /// Set when `removeSource` deleted the original.
    public var sourceRemoved = false
    /// The file's UIDs, when its header could be read (a STOW-RS answer names each instance).
    public var identity: InstanceIdentity?
}

/// The UIDs that name an instance (no patient data).
public struct InstanceIdentity: Sendable, Equatable {
    public var sopClassUID: String?
    public var sopInstanceUID: String
    public var studyInstanceUID: String
    public var seriesInstanceUID: String
}

public struct ImportProgress: Sendable {
    public var filesDone: Int
    public var filesTotal: Int
    public var bytesDone: Int64
    public var bytesTotal: Int64
}

public struct ImportSummary: Sendable {
    public var results: [ImportFileResult]
    /// Patient IDs and Study UIDs of the files imported in this run (for the audit log).
    public var patientIDs: [String] = []
    public var studyUIDs: [String] = []
    public var bytesImported: Int64
    public var seconds: Double
    public func count(_ label: String) -> Int { results.filter { $0.outcome.label == label }.count }
    public var anyFailed: Bool { results.contains { $0.outcome.isFailure } }
}

/// Raised when the import must stop as a whole (the disk is full, the catalog cannot commit).
/// Everything committed before stays; nothing half-written is visible.
public struct ImportAborted: Error, CustomStringConvertible {
    public let reason: String
    public let partial: ImportSummary
    public var description: String { "import stopped: \(reason)" }
}

extension Vault {
    /// Imports files and directories (recursively), as a change by `actor` (audited, then published as a
    /// snapshot: `Vault.change`). Holds the vault's writer lock throughout; `onWait` is called if another
    /// process holds it.
    public func importFiles(
        _ inputs: [String], options: ImportOptions = ImportOptions(), by actor: AuditActor = .currentProcess,
        onWait: () -> Void = {}, progress: (ImportProgress) -> Void = { _ in }
    ) throws -> ImportSummary {
        var results: [ImportFileResult] = []
        var files: [(path: String, size: Int64)] = []
        for input in inputs {
            Self.collectFiles(input, into: &files, errors: &results)
        }
        let sources = files.map { ImportSource(path: $0.path, size: $0.size, spill: nil) }
        return try importFiles(sources: sources, inputErrors: results, options: options, by: actor, onWait: onWait, progress: progress)
    }

    /// `importFiles` once the inputs are expanded (also `importIncoming`).
    func importFiles(
        sources files: [ImportSource], inputErrors results: [ImportFileResult], options: ImportOptions,
        by actor: AuditActor, onWait: () -> Void, progress: (ImportProgress) -> Void = { _ in }
    ) throws -> ImportSummary {
        let started = Date()
        return try change(.importFiles, by: actor, onWait: onWait) { report in
            do {
                let summary = try runImport(files, results: results, options: options, started: started, progress: progress)
                report.describe(summary)
                report.outcome = summary.anyFailed ? .partial : .ok
                return summary
            } catch let aborted as ImportAborted {
                report.describe(aborted.partial)
                throw aborted
            }
        }
    }

    /// The import itself, with the writer lock held (`importFiles`).
    private func runImport(
        _ files: [ImportSource], results inputErrors: [ImportFileResult], options: ImportOptions, started: Date,
        progress: (ImportProgress) -> Void
    ) throws -> ImportSummary {
        var results = inputErrors
        var session = ImportSession(vault: self, options: options)
        var state = ImportProgress(filesDone: 0, filesTotal: files.count, bytesDone: 0, bytesTotal: files.reduce(0) { $0 + $1.size })
        progress(state)
        var lastReport = Date()
        func report(_ bytes: Int) {
            state.bytesDone += Int64(bytes)
            if Date().timeIntervalSince(lastReport) > 0.1 {
                progress(state)
                lastReport = Date()
            }
        }
        func abort(_ error: any Error) -> ImportAborted {
            for index in session.removedDuplicateSources { results[index].sourceRemoved = true }
            session.discardBatch(&results, reason: String(describing: error))
            return ImportAborted(
                reason: String(describing: error),
                partial: ImportSummary(results: results, patientIDs: session.patientIDs.sorted(), studyUIDs: session.studyUIDs.sorted(), bytesImported: session.bytesImported, seconds: Date().timeIntervalSince(started)))
        }
        /// Stages what was being encrypted and starts encrypting the queued files (in parallel, in the
        /// background while the next files are prepared, unless `wait`), then commits if the group is full.
        func flush(commitIfFull: Bool, wait: Bool) throws {
            do {
                let flushed = session.flushWindow(wait: wait, progress: report)
                for (index, outcome) in flushed.failures { results[index].outcome = outcome }
                if let diskFull = flushed.diskFull { throw diskFull }
                if commitIfFull && session.batchIsFull { try session.commit(updating: &results) }
            } catch { throw abort(error) }
        }
        for file in files {
            var prepared = try session.prepare(file, resultIndex: results.count)
            if case .needsFlush = prepared {
                try flush(commitIfFull: false, wait: true)
                prepared = try session.prepare(file, resultIndex: results.count)
            }
            switch prepared {
            case .done(let outcome):
                results.append(ImportFileResult(path: file.path, outcome: outcome, identity: session.lastIdentity))
                state.filesDone += 1
                progress(state)
            case .queued, .needsFlush:
                results.append(ImportFileResult(path: file.path, outcome: .imported, identity: session.lastIdentity))
                if session.windowIsFull {
                    let n = session.windowCount
                    try flush(commitIfFull: true, wait: false)
                    state.filesDone += n
                    progress(state)
                }
            }
        }
        let n = session.windowCount
        try flush(commitIfFull: false, wait: true)
        state.filesDone += n
        do { try session.commit(updating: &results) } catch { throw abort(error) }
        for index in session.removedDuplicateSources { results[index].sourceRemoved = true }
        state.bytesDone = state.bytesTotal
        progress(state)
        return ImportSummary(results: results, patientIDs: session.patientIDs.sorted(), studyUIDs: session.studyUIDs.sorted(), bytesImported: session.bytesImported, seconds: Date().timeIntervalSince(started))
    }

    /// Expands a path into regular files (directories recursively, in a stable order).
    static func collectFiles(_ path: String, depth: Int = 0, into files: inout [(path: String, size: Int64)], errors: inout [ImportFileResult]) {
        var st = stat(), lst = stat()
        guard stat(path, &st) == 0, lstat(path, &lst) == 0 else {
            errors.append(ImportFileResult(path: path, outcome: .failed("cannot read: \(String(cString: strerror(errno)))")))
            return
        }
        let isLink = (lst.st_mode & S_IFMT) == S_IFLNK
        switch st.st_mode & S_IFMT {
        case S_IFDIR:
            // A symbolic link to a directory is not followed below the top level: no loops.
            if isLink && depth > 0 { return }
            // A folder that cannot be read is reported, not taken for an empty one.
            guard let dir = opendir(path) else {
                errors.append(ImportFileResult(path: path, outcome: .failed("cannot read folder: \(String(cString: strerror(errno)))")))
                return
            }
            closedir(dir)
            for name in FileIO.list(path).sorted() where !name.hasPrefix(".") {
                collectFiles(path + "/" + name, depth: depth + 1, into: &files, errors: &errors)
            }
        case S_IFREG:
            files.append((path, Int64(st.st_size)))
        default:
            // A FIFO (reading it could block for ever), a device or a socket is never read, but named.
            let kind =
                switch st.st_mode & S_IFMT {
                case S_IFIFO: "a FIFO"
                case S_IFCHR: "a character device"
                case S_IFBLK: "a block device"
                case S_IFSOCK: "a socket"
                default: "a special file"
                }
            errors.append(ImportFileResult(path: path, outcome: .failed("not imported: \(kind), not a regular file or folder")))
        }
    }

    /// Called with the writer lock held: clears staging files and blobs of an import that died
    /// between renaming its blobs and committing their catalog rows.
    func recoverInterruptedWrites() throws {
        for name in FileIO.list(layout.tmp) {
            try? FileIO.unlink(layout.tmp + "/" + name)
        }
        let leftovers = try catalog.unreferencedPendingBlobs()
        // An erasure that committed but did not finish: its blobs are among the leftovers; finishing it
        // also truncates the WAL, replaces the snapshots and writes its audit record.
        // Best effort here: an erasure that cannot finish now (say, the WAL is busy) must not stop the
        // import; it stays pending, and its blob files go below in any case.
        _ = try? finishErasures(interrupted: true)
        try blobStore.delete(leftovers.compactMap { BlobID(hex: $0) })
        try catalog.removeAllPendingBlobs()
    }
}

extension ChangeReport {
    /// An import's audit record: who and what was imported, and how much.
    mutating func describe(_ s: ImportSummary) {
        let imported = s.count("imported")
        patientIDs = s.patientIDs
        studyUIDs = s.studyUIDs
        instances = imported
        bytes = s.bytesImported
        detail = "\(imported) imported, \(s.results.filter(\.outcome.isFailure).count) not"
        wroteVault = imported > 0
    }
}

/// One import run's working state: the current group of staged blobs and the patient keys in use.
struct ImportSession {
    let vault: Vault
    let options: ImportOptions

    /// A blob written and fsynced in vault/tmp, waiting for its group commit.
    struct Staged {
        let resultIndex: Int
        let sourcePath: String
        let tmpPath: String
        let blobID: BlobID
        let digest: BlobDigest
        let header: DICOMHeader
        let patientRef: [UInt8]
        let studyIndex: [UInt8]
        let seriesIndex: [UInt8]
        let instanceIndex: [UInt8]
    }

    struct PatientKey {
        let key: SymmetricKey
        let wrapped: [UInt8]
    }

    private var staged: [Staged] = []
    private var stagedBytes: Int64 = 0
    private var patientKeys: [[UInt8]: PatientKey] = [:]
    /// Row ids and study owners already seen in this run (the writer lock keeps them valid), so that
    /// each file costs one catalog lookup, not four.
    private var rowIDs = RowIDCache()
    /// Results whose original was already in the vault and was removed (`removeSource`).
    private(set) var removedDuplicateSources: [Int] = []
    /// The UIDs of the file `prepare` saw last (nil when its header could not be read).
    private(set) var lastIdentity: InstanceIdentity?
    private(set) var bytesImported: Int64 = 0
    private(set) var patientIDs = Set<String>()
    private(set) var studyUIDs = Set<String>()

    init(vault: Vault, options: ImportOptions) {
        self.vault = vault
        self.options = options
    }

    var batchIsFull: Bool { staged.count >= options.batchFiles || stagedBytes >= options.batchBytes }

    /// A file parsed, checked and assigned its keys, waiting to be encrypted.
    struct Job: Sendable {
        let resultIndex: Int
        let path: String
        let source: any FileIO.SequentialSource
        let header: DICOMHeader
        let patientRef: [UInt8]
        let patientKey: SymmetricKey
        let studyIndex: [UInt8]
        let seriesIndex: [UInt8]
        let instanceIndex: [UInt8]
        let blobID: BlobID
        let tmpPath: String
        let size: Int64
    }

    enum Prepared {
        /// Nothing to encrypt: rejected, a duplicate, a conflict, or unreadable.
        case done(ImportOutcome)
        /// Queued for encryption.
        case queued
        /// The file repeats a SOP Instance UID queued in this window: flush first, then prepare again.
        case needsFlush
    }

    /// Files queued for encryption; encrypted together, in parallel, by `flushWindow`.
    private var window: [Job] = []
    private var windowBytes: Int64 = 0
    /// The previous window, being encrypted in the background while this one is prepared (a pipeline:
    /// parsing and encrypting overlap instead of taking turns).
    private var encrypting: Encrypting?
    struct Encrypting {
        let jobs: [Job]
        let results: ResultsBox
        let done: DispatchGroup
    }
    /// Jobs not yet staged: being encrypted, or queued.
    private var unstagedJobs: [Job] { (encrypting?.jobs ?? []) + window }
    /// Small files are encrypted several at a time across the cores; a large file fills a window alone.
    static let windowFiles = max(2, 2 * ProcessInfo.processInfo.activeProcessorCount)
    static let windowByteLimit: Int64 = 32 << 20
    var windowIsFull: Bool {
        window.count >= Self.windowFiles || windowBytes >= Self.windowByteLimit
            || staged.count + (encrypting?.jobs.count ?? 0) + window.count >= options.batchFiles
    }
    var windowCount: Int { window.count }

    /// Parses one file and decides what to do with it (serially: DCMTK, the catalog and the key cache
    /// are touched here, never from the parallel part).
    /// The longest UID DICOM allows (PS3.5 §9.1).
    static let maxUIDLength = 64

    mutating func prepare(_ input: ImportSource, resultIndex: Int) throws -> Prepared {
        lastIdentity = nil
        let path = input.path
        let source: any FileIO.SequentialSource, header: DICOMHeader
        switch Self.openAndParse(input, headerLimit: options.streamHeaderLimit) {
        case .success(let o): (source, header) = o
        case .failure(.unreadable(let reason)): return .done(.failed(reason))
        case .failure(.refused(let error)):
            if case .dictionaryUnavailable = error { throw error }
            return .done(.rejected(error.description))
        }
        if header.sopInstanceUID == nil && (path as NSString).lastPathComponent.uppercased() == "DICOMDIR" {
            return .done(.skipped("DICOMDIR media index; the images it lists are imported on their own"))
        }
        guard let sop = header.sopInstanceUID else { return .done(.rejected("not importable: missing SOP Instance UID (0008,0018)")) }
        guard let studyUID = header.studyInstanceUID else { return .done(.rejected("not importable: missing Study Instance UID (0020,000D)")) }
        guard let seriesUID = header.seriesInstanceUID else { return .done(.rejected("not importable: missing Series Instance UID (0020,000E)")) }
        lastIdentity = InstanceIdentity(sopClassUID: header[.sopClassUID], sopInstanceUID: sop, studyInstanceUID: studyUID, seriesInstanceUID: seriesUID)
        // STOW-RS to …/studies/{uid}: an instance of another study is refused, not filed (PS3.18 §10.5).
        if let required = options.requiredStudyUID, required != studyUID {
            return .done(.rejected("its Study Instance UID (0020,000D) is not the study of the request"))
        }
        // DICOM UIDs are at most 64 characters (PS3.5 §9.1). A longer one is refused rather than stored:
        // it names the export's folders and files and the DICOMweb URLs, and viewers reject it too.
        for (name, tag, uid) in [
            ("SOP Instance UID", "0008,0018", sop), ("Study Instance UID", "0020,000D", studyUID),
            ("Series Instance UID", "0020,000E", header.seriesInstanceUID ?? ""),
        ] where uid.utf8.count > Self.maxUIDLength {
            return .done(.rejected("not importable: non-conformant \(name) (\(tag)): \(uid.utf8.count) characters, DICOM allows at most \(Self.maxUIDLength)"))
        }
        let keyring = vault.keyring
        let instanceIndex = keyring.blindIndex(.instanceUID, Normalize.identifier(sop))
        if unstagedJobs.contains(where: { $0.instanceIndex == instanceIndex }) { return .needsFlush }

        // Same SOP Instance UID already in the vault, or earlier in this run?
        let existingMAC: [UInt8]? =
            try staged.first { $0.instanceIndex == instanceIndex }?.digest.contentMAC
            ?? vault.catalog.instance(uidIndex: instanceIndex)?.contentMAC
        if let existingMAC {
            let mac: [UInt8]
            do { mac = try Self.contentMAC(of: source, key: keyring.contentMAC) } catch let e as IOFailure {
                return .done(.failed(e.description))
            }
            guard constantTimeEquals(mac, existingMAC) else {
                return .done(.conflict("a different file with the same SOP Instance UID is already in the vault; the first one was kept, this file was not imported"))
            }
            // A re-run of `import --remove-source` (say, after a crash) removes originals that are already
            // safe: only once the vault's copy has been read back and matched, as for new files.
            if options.removeSource, let stored = try? vault.resolve(.instance(sop)).first,
                (try? vault.readInstance(stored) { _ in }) != nil, Glibc.unlink(path) == 0
            {
                removedDuplicateSources.append(resultIndex)
            }
            return .done(.alreadyPresent)
        }

        // A study belongs to one patient: the one it was first imported under. Later instances of the
        // study are sealed with that patient's key even if their own patient attributes differ.
        let studyIndex = keyring.blindIndex(.studyUID, Normalize.identifier(studyUID))
        // The same holds for a series (a series is filed under the study it was first seen in).
        let seriesIndex = keyring.blindIndex(.seriesUID, Normalize.identifier(header.seriesInstanceUID ?? ""))
        let unstaged = unstagedJobs
        let patientRef = try unstaged.first { $0.seriesIndex == seriesIndex }?.patientRef
            ?? staged.first { $0.seriesIndex == seriesIndex }?.patientRef
            ?? rowIDs.seriesOwner[seriesIndex]
            ?? vault.catalog.patientRef(ofSeries: seriesIndex)
            ?? unstaged.first { $0.studyIndex == studyIndex }?.patientRef
            ?? staged.first { $0.studyIndex == studyIndex }?.patientRef
            ?? rowIDs.studyOwner[studyIndex]
            ?? vault.catalog.patientRef(ofStudy: studyIndex)
            ?? Self.patientRef(header, keyring: keyring)
        let blobID = BlobID.random()
        let size = input.size
        window.append(Job(
            resultIndex: resultIndex, path: path, source: source, header: header, patientRef: patientRef,
            patientKey: try key(forPatient: patientRef), studyIndex: studyIndex, seriesIndex: seriesIndex, instanceIndex: instanceIndex, blobID: blobID,
            tmpPath: vault.blobStore.stage(blobID).path, size: size))
        windowBytes += size
        return .queued
    }

    enum OpenFailure: Error {
        case unreadable(String)
        case refused(DICOMError)
    }

    /// Opens an input and parses it. A file is opened once and what was opened is parsed (through
    /// /proc/self/fd), so that the bytes parsed and the bytes encrypted are the same even if the path
    /// is replaced meanwhile. A spill is parsed in passes over its sealed bytes, then read once more
    /// by the encryption.
    static func openAndParse(_ input: ImportSource, headerLimit: Int) -> Result<(source: any FileIO.SequentialSource, header: DICOMHeader), OpenFailure> {
        if let spill = input.spill {
            do {
                let header = try DICOMParser.parse(size: spill.size, headerLimit: headerLimit) {
                    let reader = try spill.reader()
                    return { buffer in try reader.readFully(into: buffer) }
                }
                return .success((try spill.reader(), header))
            } catch let e as DICOMError {
                if case .unreadable(let reason) = e { return .failure(.unreadable(reason)) }
                return .failure(.refused(e))
            } catch {
                return .failure(.unreadable(String(describing: error)))
            }
        }
        let source: FileIO.Descriptor
        do { source = try FileIO.Descriptor.open(input.path, flags: O_RDONLY) } catch { return .failure(.unreadable(error.description)) }
        _ = posix_fadvise(source.fd, 0, 0, Int32(POSIX_FADV_SEQUENTIAL))
        do { return .success((source, try DICOMParser.parse(path: "/proc/self/fd/\(source.fd)"))) } catch {
            return .failure(.refused(error))
        }
    }

    /// Stages the window that was being encrypted, then encrypts the queued files into vault/tmp —
    /// several at once on several cores: in the background, to be staged by the next call, or, with
    /// `wait` (or a single, possibly large, file: on this thread, with live progress), now. Returns the
    /// outcomes of files that failed, and the disk-full error that must stop the import (the others are
    /// staged, so that `discardBatch` accounts for them).
    mutating func flushWindow(wait: Bool, progress: (Int) -> Void) -> (failures: [(Int, ImportOutcome)], diskFull: IOFailure?) {
        var outcome = stageEncrypted(progress: progress)
        let jobs = window
        window.removeAll()
        windowBytes = 0
        guard !jobs.isEmpty else { return outcome }
        let contentKey = vault.keyring.contentMAC
        if jobs.count == 1 {
            let more = stage(jobs, [Self.encrypt(jobs[0], contentKey: contentKey, progress: progress)])
            return (outcome.failures + more.failures, outcome.diskFull ?? more.diskFull)
        }
        let box = ResultsBox(count: jobs.count)
        let done = DispatchGroup()
        DispatchQueue.global().async(group: done) {
            DispatchQueue.concurrentPerform(iterations: jobs.count) { i in
                box.set(i, Self.encrypt(jobs[i], contentKey: contentKey, progress: { _ in }))
            }
        }
        encrypting = Encrypting(jobs: jobs, results: box, done: done)
        if wait {
            let more = stageEncrypted(progress: progress)
            outcome = (outcome.failures + more.failures, outcome.diskFull ?? more.diskFull)
        }
        return outcome
    }

    /// Waits for the window being encrypted, if any, and stages it.
    private mutating func stageEncrypted(progress: (Int) -> Void) -> (failures: [(Int, ImportOutcome)], diskFull: IOFailure?) {
        guard let running = encrypting else { return ([], nil) }
        running.done.wait()
        encrypting = nil
        progress(Int(running.jobs.reduce(0) { $0 + $1.size }))
        return stage(running.jobs, running.results.results)
    }

    private mutating func stage(_ jobs: [Job], _ digests: [Result<BlobDigest, IOFailure>]) -> (failures: [(Int, ImportOutcome)], diskFull: IOFailure?) {
        var failures: [(Int, ImportOutcome)] = []
        var diskFull: IOFailure?
        for (job, result) in zip(jobs, digests) {
            switch result {
            case .success(let digest):
                staged.append(Staged(
                    resultIndex: job.resultIndex, sourcePath: job.path, tmpPath: job.tmpPath, blobID: job.blobID, digest: digest,
                    header: job.header, patientRef: job.patientRef, studyIndex: job.studyIndex, seriesIndex: job.seriesIndex,
                    instanceIndex: job.instanceIndex))
                stagedBytes += digest.plainSize
            case .failure(let e):
                failures.append((job.resultIndex, .failed(e.description)))
                if e.isDiskFull { diskFull = e }
            }
        }
        return (failures, diskFull)
    }

    /// Thread-safe: touches only the job's own descriptor and files.
    private static func encrypt(_ job: Job, contentKey: SymmetricKey, progress: (Int) -> Void) -> Result<BlobDigest, IOFailure> {
        do {
            return .success(try BlobCodec.encrypt(
                source: job.source, to: job.tmpPath, id: job.blobID, patientKey: job.patientKey, contentKey: contentKey,
                sync: false, progress: progress))  // made durable by the group commit's syncfs
        } catch let e as IOFailure {
            return .failure(e)
        } catch {
            return .failure(IOFailure(operation: "encrypt", path: job.path, errno: EIO))
        }
    }

    /// The patient's identity for the catalog: Patient ID (with its issuer, in a domain of its own, when
    /// present); else name and birth date; else, for a file with no patient attributes at all, its study
    /// (so that unidentified studies are not merged into one "patient"). Normalised, then blind-indexed.
    static func patientRef(_ h: DICOMHeader, keyring: Keyring) -> [UInt8] {
        if let pid = h[.patientID] {
            if let issuer = h[.issuerOfPatientID] {
                return keyring.blindIndex(.patientIDWithIssuer, Normalize.identifier(pid) + "\u{0}" + Normalize.identifier(issuer))
            }
            return keyring.blindIndex(.patientID, Normalize.identifier(pid))
        }
        let name = Normalize.personName(h[.patientName] ?? ""), birth = h[.patientBirthDate] ?? ""
        if name.isEmpty && birth.isEmpty {
            return keyring.blindIndex(.patientUnidentified, Normalize.identifier(h.studyInstanceUID ?? ""))
        }
        return keyring.blindIndex(.patientAnonymous, name + "\u{0}" + birth)
    }

    /// The patient's key: from this run's cache, unwrapped from the catalog, or new (persisted at commit).
    private mutating func key(forPatient ref: [UInt8]) throws -> SymmetricKey {
        if let k = patientKeys[ref] { return k.key }
        let ad = Vault.patientKeyAssociatedData(ref)
        if let row = try vault.catalog.patientKeyRow(ref: ref) {
            let key = try KeyWrap.unwrap(row.wrappedKey, with: vault.keyring.master, associatedData: ad)
            patientKeys[ref] = PatientKey(key: key, wrapped: row.wrappedKey)
            return key
        }
        let key = try SymmetricKey.random()
        patientKeys[ref] = PatientKey(key: key, wrapped: KeyWrap.wrap(key, with: vault.keyring.master, associatedData: ad))
        return key
    }

    static func contentMAC(of source: any FileIO.SequentialSource, key: SymmetricKey) throws -> [UInt8] {
        let hasher = KeyedHasher(key: key)
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
        defer {
            memset(buf.baseAddress!, 0, buf.count)  // a patient's clear bytes
            buf.deallocate()
        }
        while true {
            let n = try source.readFully(into: buf)
            if n == 0 { break }
            hasher.update(UnsafeRawBufferPointer(rebasing: buf[0..<n]))
        }
        return hasher.finalize()
    }

    /// The group commit: record the blob ids as pending, rename blobs into place, fsync their
    /// directories, then commit the catalog rows and clear the pending marks in one transaction.
    /// A crash at any point leaves either staging files (swept), pending blobs (removed by the next
    /// writer, not orphans for verify), or a complete commit.
    mutating func commit(updating results: inout [ImportFileResult]) throws {
        guard !staged.isEmpty else { return }
        let batch = staged
        // The blobs durable, listed as pending in the catalog, then visible: a crash at any point
        // leaves staging files (swept) or pending blobs (removed by the next writer).
        try vault.blobStore.publish(batch.map { StagedBlob(id: $0.blobID, path: $0.tmpPath) }) {
            try vault.catalog.addPendingBlobs(batch.map(\.blobID.hexString))
        }

        let sealer = vault.sealer
        let keyring = vault.keyring
        let keys = patientKeys
        try vault.catalog.file(batch.map { s in
            let h = s.header
            return InstanceToFile(
                patientRef: s.patientRef,
                patientIDIndex: h[.patientID].map { keyring.blindIndex(.patientID, Normalize.identifier($0)) },
                wrappedPatientKey: {
                    guard let pk = keys[s.patientRef] else { throw VaultError.catalog("patient key lost during import") }
                    return pk.wrapped
                },
                sealedPatient: {
                    try sealer.seal(
                        PatientRecord(
                            name: h[.patientName] ?? "", patientID: h[.patientID] ?? "", issuer: h[.issuerOfPatientID] ?? "",
                            birthDate: h[.patientBirthDate] ?? "", sex: h[.patientSex] ?? "", characterSetConverted: h.characterSetConverted),
                        table: "patient", index: s.patientRef)
                },
                studyIndex: s.studyIndex,
                accessionIndex: h[.accessionNumber].map { keyring.blindIndex(.accession, Normalize.identifier($0)) },
                sealedStudy: {
                    try sealer.seal(
                        StudyRecord(
                            studyUID: h.studyInstanceUID ?? "", date: h[.studyDate] ?? "", time: h[.studyTime] ?? "",
                            accessionNumber: h[.accessionNumber] ?? "", referringPhysician: h[.referringPhysicianName] ?? "",
                            institution: h[.institutionName] ?? "", description: h[.studyDescription] ?? "", studyID: h[.studyID] ?? ""),
                        table: "study", index: s.studyIndex)
                },
                seriesIndex: s.seriesIndex,
                sealedSeries: {
                    try sealer.seal(
                        SeriesRecord(
                            seriesUID: h.seriesInstanceUID ?? "", modality: h[.modality] ?? "", number: h[.seriesNumber] ?? "",
                            description: h[.seriesDescription] ?? "", bodyPart: h[.bodyPartExamined] ?? "",
                            performingPhysician: h[.performingPhysicianName] ?? ""),
                        table: "series", index: s.seriesIndex)
                },
                instanceIndex: s.instanceIndex, blobID: s.blobID.hexString, plainSize: s.digest.plainSize, blobSize: s.digest.blobSize,
                contentMAC: s.digest.contentMAC, ciphertextHash: s.digest.ciphertextHash,
                sealedInstance: try sealer.seal(
                    InstanceRecord(
                        sopInstanceUID: h.sopInstanceUID ?? "", sopClassUID: h[.sopClassUID] ?? "", number: h[.instanceNumber] ?? "",
                        transferSyntaxUID: h.transferSyntaxUID, frames: h[.numberOfFrames] ?? "", rows: h[.rows] ?? "",
                        columns: h[.columns] ?? ""),
                    table: "instance", index: s.instanceIndex))
        }, cache: &rowIDs)
        for s in batch {
            rowIDs.studyOwner[s.studyIndex] = s.patientRef
            rowIDs.seriesOwner[s.seriesIndex] = s.patientRef
            bytesImported += s.digest.plainSize
            if let pid = s.header[.patientID] { patientIDs.insert(pid) }
            if let uid = s.header.studyInstanceUID { studyUIDs.insert(uid) }
        }
        staged.removeAll()
        stagedBytes = 0
        if options.removeSource { removeSources(batch, results: &results) }
    }

    /// Deletes originals whose blob reads back (every tag, and the keyed content fingerprint) intact.
    private func removeSources(_ batch: [Staged], results: inout [ImportFileResult]) {
        for s in batch {
            guard let key = patientKeys[s.patientRef]?.key else { continue }
            let stored = StoredInstance(blobID: s.blobID, patientKey: key, plainSize: s.digest.plainSize, contentMAC: s.digest.contentMAC)
            if (try? vault.instanceReader.readRecorded(stored, fingerprint: true) { _ in }) != nil, Glibc.unlink(s.sourcePath) == 0 {
                results[s.resultIndex].sourceRemoved = true
            }
        }
    }

    /// Forgets the current group after a fatal error: its staging files are removed, nothing committed,
    /// and its files are reported as not imported.
    mutating func discardBatch(_ results: inout [ImportFileResult], reason: String) {
        // A window still being encrypted: wait for it, then drop its staging files with the others.
        _ = stageEncrypted(progress: { _ in })
        for job in window { results[job.resultIndex].outcome = .failed("not imported: \(reason)") }
        window.removeAll()
        windowBytes = 0
        for s in staged {
            _ = Glibc.unlink(s.tmpPath)
            results[s.resultIndex].outcome = .failed("not committed: \(reason); run the import again")
        }
        staged.removeAll()
        stagedBytes = 0
    }
}

extension Vault {
    static func patientKeyAssociatedData(_ ref: [UInt8]) -> [UInt8] {
        Array("medvault.v1.patient-key|".utf8) + ref
    }
}

/// Per-index results written by parallel workers.
final class ResultsBox: @unchecked Sendable {
    private let lock = NSLock()
    private var storage: [Result<BlobDigest, IOFailure>?]
    init(count: Int) { storage = Array(repeating: nil, count: count) }
    func set(_ i: Int, _ r: Result<BlobDigest, IOFailure>) { lock.lock(); storage[i] = r; lock.unlock() }
    var results: [Result<BlobDigest, IOFailure>] {
        lock.lock(); defer { lock.unlock() }
        return storage.map { $0 ?? .failure(IOFailure(operation: "encrypt", path: "", errno: EIO)) }
    }
}

/// Catalog row ids by blind index, for one import run.
