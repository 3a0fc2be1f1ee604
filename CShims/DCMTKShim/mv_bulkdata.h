// mv_bulkdata.h — private to the shim: the DICOM JSON writer with BulkDataURIs (mv_bulkdata.cpp),
// used by mv_dcm_json_from_buffer_with (mv_dcmtk.cpp).
#ifndef MV_BULKDATA_H
#define MV_BULKDATA_H

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dctk.h"

#include <ostream>

#include "mv_dcmtk.h"

namespace mv {

// Writes the members of `dataset` as DICOM JSON (compact, without the enclosing braces). With
// `options` and a threshold, binary values above it become BulkDataURIs (include/mv_dcmtk.h).
OFCondition writeDatasetJson(DcmDataset &dataset, const mv_dcm_json_options *options, std::ostream &out);

}  // namespace mv

#endif
