package control

import "github.com/imgcache/imgcache/cachecore"

// ImageOf describes an image of the cache in the API's terms; pinned and
// queued are left for the caller to fill in.
func ImageOf(i cachecore.Info) Image {
	return Image{
		Name:        i.Name,
		Size:        i.Size,
		CachedBytes: i.CachedBytes,
		State:       string(i.State),
		Hits:        i.Hits,
		LastAccess:  i.LastAccess,
		Digest:      i.Digest,
		ModTime:     i.ModTime,
		Source:      i.Source,
		Error:       i.LastError,
		ErrorAt:     i.LastErrorAt,
	}
}
