import XCTest

final class PassthroughTestsPlaceholder: XCTestCase {}
