#if canImport(Glibc)
import Glibc
#endif

extension Sys {
    /// Starts a joinable thread running `body`; the caller joins it with `pthread_join`.
    /// The corresponding C function is `pthread_create`.
    public static func startThread(_ body: @escaping () -> Void) throws(Errno) -> pthread_t {
        // The closure crosses into the new thread through pthread_create's one pointer;
        // the new thread takes over the box's retain.
        final class Box {
            let body: () -> Void
            init(_ body: @escaping () -> Void) { self.body = body }
        }
        let context = Unmanaged.passRetained(Box(body)).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { raw in
            guard let raw else { return nil }
            Unmanaged<Box>.fromOpaque(raw).takeRetainedValue().body()
            return nil
        }, context)
        guard rc == 0 else {
            Unmanaged<Box>.fromOpaque(context).release()
            throw Errno(rc)
        }
        return thread
    }
}
