package upstream

// Rememberer is an Upstream that can spare requests when it is told the
// entries the cache already holds (from its index, at start): its List
// may then take their versions as current until a listing or a reply
// says otherwise, instead of asking about each again.
type Rememberer interface {
	Remember(entries []Entry)
}
