package control

import "github.com/imgcache/imgcache/cachecore"

// ImageOf describes an image of the cache in the API's terms.
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
		Pinned:      i.Pinned,
		Queued:      i.Queued,
	}
}

// VerifyResultOf describes a cache check in the API's terms.
func VerifyResultOf(r cachecore.CheckResult) VerifyResult {
	v := VerifyResult{Images: r.Images, Chunks: r.Chunks, Bytes: r.Bytes, BadChunks: r.BadChunks,
		Invalid: r.Invalid, Reports: make([]VerifyReport, len(r.Reports))}
	for i, ir := range r.Reports {
		v.Reports[i] = VerifyReport{Name: ir.Name, State: string(ir.State), Chunks: ir.Chunks,
			BadChunks: ir.BadChunks, Message: ir.Message}
	}
	return v
}
