package upstream

// Retainer is an Upstream whose images stay valid after they leave its
// catalog: a mirror (simplestreams) whose clients may hold an older
// index. The cache keeps such an image listed, marked retired, while it
// is complete and verified, until it is evicted.
type Retainer interface{ RetainsRemoved() bool }

// Warner is an Upstream that leaves problem items out of a listing it
// otherwise gives (a refused manifest, a colliding name): Warnings says
// what the last successful List left out and why, one line each. The
// cache reads it after each List that succeeds and shows it to users.
type Warner interface{ Warnings() []string }
