package cachecore

// ServeMode says how the kernel reads images that are complete: straight
// from the data file (kernel FUSE passthrough: the daemon never sees those
// reads), or through FUSE, keeping the pages cached across opens. The
// mount decides it once, by probing the kernel, and records it here so
// that stats and the root's xattrs can show it.
type ServeMode string

const (
	// ServePassthrough: opens of settled images are handed to the kernel.
	ServePassthrough ServeMode = "passthrough"
	// ServePageCache: every read reaches the daemon unless the kernel's
	// page cache (kept across opens of settled images) has it.
	ServePageCache ServeMode = "page-cache"
)

// SetServeMode records how the mount serves settled images.
func (c *Cache) SetServeMode(m ServeMode) { c.serveMode.Store(m) }

// ServeMode is how the mount serves settled images (ServePageCache until
// the mount says otherwise).
func (c *Cache) ServeMode() ServeMode {
	if m, ok := c.serveMode.Load().(ServeMode); ok {
		return m
	}
	return ServePageCache
}
