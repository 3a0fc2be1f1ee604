// What an audit record says happened, as types. On disk each is the same short string earlier releases
// wrote ("import", "key.rotate", "GET /dicom-web/studies", …), so old logs read back unchanged and a
// record written by a later release is kept as `.unrecognized` rather than failing the whole log.

/// The action an audit record describes.
public enum AuditAction: Hashable, Sendable, AuditString {
    // Changes (they go through `Vault.change`).
    case importFiles, forget, retentionApply
    case userAdd, userDisable, tokenIssue, tokenRevoke
    case passphraseChange, slotAdd, recoveryAdd, slotRemove, keyRotate
    case backupRestore, snapshotPublish
    /// The audit log found and repaired an interrupted append (docs/audit.md).
    case auditRepair
    // Reads.
    case export, list, retentionPlan, auditReport
    /// An API request: method and path, e.g. `GET /dicom-web/studies`.
    case request(method: String, path: String)
    /// Repeated failed authentication.
    case alert
    /// A string this release does not know (written by a later one).
    case unrecognized(String)

    package static let named: [(AuditAction, String)] = [
        (.importFiles, "import"), (.forget, "forget"), (.retentionApply, "retention.apply"),
        (.userAdd, "user.add"), (.userDisable, "user.disable"), (.tokenIssue, "token.issue"), (.tokenRevoke, "token.revoke"),
        (.passphraseChange, "key.passphrase-change"), (.slotAdd, "key.add-slot"), (.recoveryAdd, "key.add-recovery"),
        (.slotRemove, "key.remove-slot"), (.keyRotate, "key.rotate"),
        (.backupRestore, "backup.restore"), (.snapshotPublish, "snapshot.publish"), (.auditRepair, "audit.repair"),
        (.export, "export"), (.list, "ls"), (.retentionPlan, "retention.plan"), (.auditReport, "audit.report"), (.alert, "alert"),
    ]

    /// The string stored in the sealed record.
    public var rawValue: String {
        switch self {
        case .request(let method, let path): return method + " " + path
        case .unrecognized(let s): return s
        default: return Self.named.first { $0.0 == self }?.1 ?? ""
        }
    }

    public init(rawValue: String) {
        if let known = Self.named.first(where: { $0.1 == rawValue }) {
            self = known.0
        } else if let space = rawValue.firstIndex(of: " "), rawValue[..<space].allSatisfy({ $0.isUppercase }), !rawValue[..<space].isEmpty {
            self = .request(method: String(rawValue[..<space]), path: String(rawValue[rawValue.index(after: space)...]))
        } else {
            self = .unrecognized(rawValue)
        }
    }

    /// The method of an API request, nil for any other action.
    public var requestMethod: String? { if case .request(let method, _) = self { method } else { nil } }

    /// Whether the action is an API request (whatever its method).
    public var isRequest: Bool { if case .request = self { true } else { false } }

}

/// How an audited action ended.
public enum AuditOutcome: String, Hashable, Sendable, Codable, CustomStringConvertible {
    case ok, denied, failed, partial, alert
    public var description: String { rawValue }

    public init(from decoder: any Decoder) throws {
        let s = try decoder.singleValueContainer().decode(String.self)
        // An outcome this release does not know reads as "failed": never as success.
        self = AuditOutcome(rawValue: s) ?? .failed
    }
}

/// What an API request does with patient data, stated by the server for the route that answered it
/// (docs/audit.md, "What is recorded"). The server writes it in every request record since this field
/// was added; the outcome says whether it happened. Stored as a short string; a string this release
/// does not know (written by a later one) is kept as `.unrecognized` rather than failing the record.
public enum AuditAccess: Hashable, Sendable, AuditString {
    /// Instances or their pixel data: WADO-RS retrieval of a study, series or instance, frames, bulk
    /// data, rendered images and thumbnails.
    case retrieve
    /// WADO-RS `/metadata`: every attribute except the pixels.
    case metadata
    /// QIDO-RS searches: the identifiers and study attributes of what matched.
    case search
    /// STOW-RS: instances stored (data in, not out; the stored patients are named in the record).
    case store
    /// None: a path the API does not have, another method on a known path (405), `OPTIONS`. Stored as "none".
    case noPatientData
    /// A string this release does not know (written by a later one).
    case unrecognized(String)

    package static let named: [(AuditAccess, String)] = [
        (.retrieve, "retrieve"), (.metadata, "metadata"), (.search, "search"), (.store, "store"), (.noPatientData, "none"),
    ]

    /// The string stored in the sealed record.
    public var rawValue: String {
        if case .unrecognized(let s) = self { return s }
        return Self.named.first { $0.0 == self }?.1 ?? ""
    }

    public init(rawValue: String) {
        self = Self.named.first { $0.1 == rawValue }?.0 ?? .unrecognized(rawValue)
    }

}

/// A value stored in the sealed record as one string, which never fails to read: a string this release
/// does not know becomes the type's `unrecognized` case (AuditAction, AuditAccess).
public protocol AuditString: Codable, CustomStringConvertible {
    var rawValue: String { get }
    init(rawValue: String)
}

extension AuditString {
    public var description: String { rawValue }

    public init(from decoder: any Decoder) throws {
        self.init(rawValue: try decoder.singleValueContainer().decode(String.self))
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }
}
