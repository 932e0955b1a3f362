package opcua

import (
	"context"
	"errors"
	"fmt"

	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"
)

// browse adds the variables below folder b (down to its depth) to the session's items. It runs
// on every connect, so that nodes added on the server while the input was away are picked up.
// A variable's field name is its browse name, prefixed by the names of the folders between it
// and b ("Level2.Value"). Objects are descended into, variables are not (their children are
// properties such as EURange).
func (s *session) browse(ctx context.Context, b *browseSpec, namespaces []string) error {
	root, err := b.ref.resolve(namespaces)
	if err != nil {
		return err
	}
	type entry struct {
		id   *ua.NodeID
		path string
	}
	seen := map[string]bool{root.String(): true}
	level := []entry{{id: root}}
	found := 0
	for depth := 1; depth <= b.depth && len(level) > 0; depth++ {
		var next []entry
		ids := make([]*ua.NodeID, len(level))
		for i, e := range level {
			ids[i] = e.id
		}
		refs, err := s.browseNodes(ctx, ids)
		if err != nil {
			return err
		}
		for i, rs := range refs {
			for _, r := range rs {
				if r.NodeID == nil || r.NodeID.HasServerIndex() || r.BrowseName == nil ||
					(r.ReferenceTypeID != nil && r.ReferenceTypeID.IntID() == id.HasProperty && r.ReferenceTypeID.Namespace() == 0) {
					continue
				}
				nid := ua.NewNodeIDFromExpandedNodeID(r.NodeID)
				key := nid.String()
				if seen[key] {
					continue
				}
				seen[key] = true
				path := r.BrowseName.Name
				if level[i].path != "" {
					path = level[i].path + "." + path
				}
				switch r.NodeClass {
				case ua.NodeClassVariable:
					s.addBrowsed(b, nid, path)
					found++
				case ua.NodeClassObject:
					next = append(next, entry{id: nid, path: path})
				}
			}
		}
		level = next
	}
	if found == 0 {
		s.log.Warn("browse found no variables", "node", b.ref.String(), "depth", b.depth)
	}
	return nil
}

func (s *session) addBrowsed(b *browseSpec, nid *ua.NodeID, path string) {
	key := b.tmpl.measurement + "\x00" + nid.String() + "\x00" + path
	st, ok := s.browsed[key]
	if !ok {
		spec := b.tmpl
		spec.field = path
		spec.key = b.key
		spec.ref = nodeRef{text: nid.String()}
		st = s.o.newNodeState(&spec)
		s.browsed[key] = st
	}
	st.id = nid
	s.items = append(s.items, st)
}

// browseNodes browses ids forward along hierarchical references, in calls of at most
// MaxNodesPerBrowse nodes (halved on BadTooManyOperations), following continuation points.
func (s *session) browseNodes(ctx context.Context, ids []*ua.NodeID) ([][]*ua.ReferenceDescription, error) {
	out := make([][]*ua.ReferenceDescription, len(ids))
	size := len(ids)
	if s.limits.maxNodesPerBrowse > 0 {
		size = min(size, int(s.limits.maxNodesPerBrowse))
	}
	for i := 0; i < len(ids); {
		n := min(size, len(ids)-i)
		req := &ua.BrowseRequest{RequestedMaxReferencesPerNode: 1000}
		for _, nid := range ids[i : i+n] {
			req.NodesToBrowse = append(req.NodesToBrowse, &ua.BrowseDescription{
				NodeID:          nid,
				BrowseDirection: ua.BrowseDirectionForward,
				ReferenceTypeID: ua.NewNumericNodeID(0, id.HierarchicalReferences),
				IncludeSubtypes: true,
				NodeClassMask:   uint32(ua.NodeClassObject | ua.NodeClassVariable),
				ResultMask:      uint32(ua.BrowseResultMaskAll),
			})
		}
		res, err := s.client.Browse(ctx, req)
		if errors.Is(err, ua.StatusBadTooManyOperations) && n > 1 {
			s.split(&size, n, "browse")
			continue
		}
		if err != nil {
			return nil, err
		}
		if len(res.Results) != n {
			return nil, fmt.Errorf("%d browse results for %d nodes", len(res.Results), n)
		}
		for k, r := range res.Results {
			if r.StatusCode != ua.StatusOK {
				return nil, fmt.Errorf("browse %s: %w", ids[i+k], r.StatusCode)
			}
			refs := r.References
			for cp := r.ContinuationPoint; len(cp) > 0; {
				nres, err := s.client.BrowseNext(ctx, &ua.BrowseNextRequest{ContinuationPoints: [][]byte{cp}})
				if err != nil {
					return nil, err
				}
				if len(nres.Results) != 1 || nres.Results[0].StatusCode != ua.StatusOK {
					return nil, fmt.Errorf("browse next of %s failed", ids[i+k])
				}
				refs = append(refs, nres.Results[0].References...)
				cp = nres.Results[0].ContinuationPoint
			}
			out[i+k] = refs
		}
		i += n
	}
	return out, nil
}
