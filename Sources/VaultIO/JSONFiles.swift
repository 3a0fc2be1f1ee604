// JSON for the vault's files and sealed records. An encoder failure is an error, never an empty
// vault.json, manifest or audit record written in its place.
public import Foundation

/// A value that could not be encoded as JSON.
public struct JSONEncodingFailure: Error, Equatable, Sendable, CustomStringConvertible {
    public let what: String
    public let reason: String
    public var description: String { "\(what) could not be encoded: \(reason)" }
}

public enum JSONFiles {
    /// `value` as JSON, with sorted keys (stable bytes) and ISO 8601 dates.
    public static func encode<T: Encodable>(
        _ value: T, _ what: String, formatting: JSONEncoder.OutputFormatting = []
    ) throws(JSONEncodingFailure) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = formatting.union(.sortedKeys)
        encoder.dateEncodingStrategy = .iso8601
        do { return Array(try encoder.encode(value)) } catch { throw JSONEncodingFailure(what: what, reason: "\(error)") }
    }
}
