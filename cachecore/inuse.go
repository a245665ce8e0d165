package cachecore

// InUse reports whether the image is open or being fetched: only then can
// its cached bytes grow (a read fetching) — so the fs may let the kernel
// keep the attributes of an idle image for longer.
func (img *Image) InUse() bool {
	img.mu.Lock()
	defer img.mu.Unlock()
	return img.users > 0
}
