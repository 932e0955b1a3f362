package importer

import "errors"

// TagListOptions say how tag lists become a configuration.
type TagListOptions struct {
	Profile    string // the profile a tag list becomes
	Controller string // with no device list: one device on this controller
	SlaveID    int    // its unit id; -1: the tag list's, else 1
}

// TagLists reads tag lists and device lists.
func TagLists(paths []string, opts TagListOptions) (*Result, error) {
	return nil, errors.New("not yet")
}

// ExportCSV writes a profile of a configuration as tagpipe's CSV.
func ExportCSV(configFile, profile string) (string, error) {
	return "", errors.New("not yet")
}
