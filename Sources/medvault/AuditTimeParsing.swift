// Times as people type them for `audit show` and `audit report`: dates, dates and times with or
// without a zone, and spans before now. Parsed here, in the CLI; the engine takes an `AuditWindow`.
import VaultAudit
import Foundation
import VaultStore

/// A `--since` or `--until` value that is not understood, or a window that ends before it starts.
enum AuditTimeError: Error, Equatable, Sendable, CustomStringConvertible {
    case unrecognised(option: String, value: String)
    case unrecognisedSpan(option: String, reason: String)
    case sinceAfterUntil(since: Date, until: Date)

    init(_ e: AuditWindowError) { self = .sinceAfterUntil(since: e.since, until: e.until) }

    var description: String {
        switch self {
        case .unrecognised(let option, let value):
            "\(option) \(value): not a time. Give a date (2026-11-23), a date and time (2026-11-23T14:30, "
                + "2026-11-23T14:30:00+01:00; UTC when no zone is given), or a span before now (30min, 72h, 7d, 2w)"
        case .unrecognisedSpan(let option, let reason): "\(option) \(reason)"
        case .sinceAfterUntil(let since, let until):
            "--since (\(AuditText.time(since))) is after --until (\(AuditText.time(until))): the window is empty"
        }
    }
}


extension AuditWindow {
    /// Parses command-line values. A date, or a time without seconds, given as `until` means the end
    /// of that day or minute, so `--since 2026-11-01 --until 2026-11-30` is the whole of November.
    static func parse(since: String?, until: String?, now: Date = Date()) throws(AuditTimeError) -> AuditWindow {
        let start = try since.map { s throws(AuditTimeError) in try AuditTime.parse(s, option: "--since", now: now, asEnd: false) }
        let end = try until.map { s throws(AuditTimeError) in try AuditTime.parse(s, option: "--until", now: now, asEnd: true) }
        do { return try AuditWindow(since: start, until: end) } catch { throw AuditTimeError(error) }
    }

}

/// The time forms the audit commands accept. Parsed by hand, not by a locale-dependent formatter, so
/// that anything not listed is refused rather than guessed at.
enum AuditTime {
    /// - `2026-11-23` (UTC midnight; as an end, the end of that day)
    /// - `2026-11-23T14:30`, `2026-11-23 14:30:05`, `…14:30:05.250`, each optionally followed by `Z`,
    ///   `+01:00`, `+0100` or `+01`; no zone means UTC
    /// - `30min`, `72h`, `7d`, `2w`, `90s`: that long before `now` (`DurationText`); and `now`
    static func parse(_ text: String, option: String, now: Date, asEnd: Bool) throws(AuditTimeError) -> Date {
        let s = text.trimmingCharacters(in: .whitespaces)
        if s.lowercased() == "now" { return now }
        if let span = try relativeSpan(s, option: option) { return now.addingTimeInterval(-span) }
        if let (start, precision) = absolute(s) {
            // An end given to the day, minute or second includes all of it (times in the log are whole seconds).
            return asEnd && precision > 0 ? start.addingTimeInterval(precision - 0.001) : start
        }
        throw .unrecognised(option: option, value: text)
    }

    /// A span (`DurationText`), nil when `s` is not one; a bare `m` is an error with a hint.
    static func relativeSpan(_ s: String, option: String) throws(AuditTimeError) -> TimeInterval? {
        do { return try DurationText.seconds(s) } catch {
            if s.count >= 2, s.hasSuffix("m"), s.dropLast().allSatisfy(\.isASCIIDigit) {
                throw .unrecognisedSpan(option: option, reason: error.description)
            }
            return nil
        }
    }

    /// The instant and the length of the unit it was given to (86400, 60, 1, or 0 with a fraction).
    static func absolute(_ s: String) -> (Date, TimeInterval)? {
        var p = Array(s.utf8)[...]
        func number(_ width: Int) -> Int? {
            guard p.count >= width, p.prefix(width).allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
            let v = p.prefix(width).reduce(0) { $0 * 10 + Int($1 - 0x30) }
            p = p.dropFirst(width)
            return v
        }
        func take(_ c: Character) -> Bool {
            guard let f = p.first, f == c.asciiValue else { return false }
            p = p.dropFirst()
            return true
        }
        guard let year = number(4), take("-"), let month = number(2), take("-"), let day = number(2),
            (1...12).contains(month), day >= 1, day <= daysIn(month: month, year: year)
        else { return nil }
        let midnight = TimeInterval(daysFromCivil(year: year, month: month, day: day)) * 86400
        if p.isEmpty { return (Date(timeIntervalSince1970: midnight), 86400) }
        guard take("T") || take("t") || take(" "), let hour = number(2), take(":"), let minute = number(2),
            hour < 24, minute < 60
        else { return nil }
        var seconds = TimeInterval(hour * 3600 + minute * 60), precision: TimeInterval = 60
        if take(":") {
            guard let sec = number(2), sec < 60 else { return nil }
            seconds += TimeInterval(sec)
            precision = 1
            if take(".") || take(",") {
                let digits = p.prefix { $0 >= 0x30 && $0 <= 0x39 }.prefix(9)
                guard !digits.isEmpty else { return nil }
                p = p.dropFirst(digits.count)
                // As an integer over a power of ten, so that .25 is exactly a quarter of a second.
                seconds += Double(digits.reduce(0) { $0 * 10 + Int($1 - 0x30) }) / pow(10, Double(digits.count))
                precision = 0
            }
        }
        var offset = 0
        if take("Z") || take("z") {
        } else if let sign = p.first, sign == UInt8(ascii: "+") || sign == UInt8(ascii: "-") {
            p = p.dropFirst()
            guard let oh = number(2), oh <= 14 else { return nil }
            var om = 0
            if !p.isEmpty {
                _ = take(":")
                guard let m = number(2), m < 60 else { return nil }
                om = m
            }
            offset = (oh * 3600 + om * 60) * (sign == UInt8(ascii: "-") ? -1 : 1)
        }
        guard p.isEmpty else { return nil }
        return (Date(timeIntervalSince1970: midnight + seconds - TimeInterval(offset)), precision)
    }

    static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    /// Days since 1970-01-01 in the proleptic Gregorian calendar (H. Hinnant's days_from_civil).
    static func daysFromCivil(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146097 + doe - 719468
    }
}

extension Character {
    var isASCIIDigit: Bool { isASCII && isNumber }
}
